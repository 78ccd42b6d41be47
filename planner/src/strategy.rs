//! Placement strategies, named as in Accelerate's `device_map`.

use std::fmt;
use std::str::FromStr;

/// How units are spread over the devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Fill GPU 0, then GPU 1, …, then cpu, then disk, in execution order. A module that does
    /// not fit where the fill has reached is split into its children; a no-split unit that
    /// does not fit moves on to the next device (nothing goes back to an earlier one).
    #[default]
    Sequential,
}

impl Strategy {
    /// Every strategy, for help texts.
    pub const ALL: &'static [Strategy] = &[Strategy::Sequential];

    /// The name users type.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Sequential => "sequential",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "sequential" => Ok(Strategy::Sequential),
            other => Err(format!("unknown strategy `{other}`; available: sequential")),
        }
    }
}
