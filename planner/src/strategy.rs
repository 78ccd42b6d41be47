//! Placement strategies, named as in Accelerate's `device_map`, plus stowage's own.

use std::fmt;
use std::str::FromStr;

/// How units are spread over the devices. Each variant's rule is exact; see the variant docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Fill GPU 0, then GPU 1, …, then cpu, then disk, in execution order. A module that does
    /// not fit where the fill has reached is split into its children; a no-split unit that
    /// does not fit moves on to the next device (nothing goes back to an earlier one).
    Sequential,
    /// Spread the model evenly over the GPUs: every GPU but the last is capped at
    /// `total / number of GPUs` plus the largest no-split unit (so a GPU's share is not cut
    /// short by one unit), the last GPU keeps its full budget, then the fill is
    /// [`Strategy::Sequential`]'s. `auto` is an alias, as in Accelerate.
    #[default]
    Balanced,
    /// Like [`Strategy::Balanced`] over GPUs 1…n, and GPU 0 gets only what does not fit on
    /// them, keeping it free for generation's logits and the offload staging buffer.
    BalancedLow0,
    /// Stowage's own: the contiguous split of the execution-ordered units over the GPUs that
    /// minimises the largest load relative to each GPU's budget (so unequal GPUs get
    /// proportional shares), computed exactly by dynamic programming. When the model does not
    /// fit on the GPUs, the fewest units needed are offloaded first in `--offload-order` (by
    /// default the last layers and the head), onto cpu then disk in execution order.
    Optimal,
}

impl Strategy {
    /// Every strategy, for help texts.
    pub const ALL: &'static [Strategy] = &[
        Strategy::Sequential,
        Strategy::Balanced,
        Strategy::BalancedLow0,
        Strategy::Optimal,
    ];

    /// The name users type (`balanced_low_0`, as in Accelerate).
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Sequential => "sequential",
            Strategy::Balanced => "balanced",
            Strategy::BalancedLow0 => "balanced_low_0",
            Strategy::Optimal => "optimal",
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
    /// Accepts every [`Strategy::as_str`] name, `auto` for balanced, and `-` for `_`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "sequential" => Ok(Strategy::Sequential),
            "balanced" | "auto" => Ok(Strategy::Balanced),
            "balanced_low_0" | "balanced_low0" => Ok(Strategy::BalancedLow0),
            "optimal" => Ok(Strategy::Optimal),
            other => Err(format!(
                "unknown strategy `{other}`; available: auto, balanced, balanced_low_0, sequential, optimal"
            )),
        }
    }
}

/// Whose semantics a plan follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compat {
    /// Stowage's own rules (the default): reserves only when something is offloaded,
    /// runtime-aware budgets, execution order.
    #[default]
    Stowage,
    /// Reproduce what Accelerate 1.x's `infer_auto_device_map` (after `get_balanced_memory` for
    /// the balanced strategies) computes, quirks included.
    Accelerate,
}

/// Which units leave the GPUs first when the model does not fit on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum OffloadOrder {
    /// Whole units from the end of the model: the head, then the last layers.
    #[default]
    Last,
    /// For mixture-of-experts models: the routed experts of each layer (last layer first) before
    /// any whole layer, as llama.cpp's `--n-cpu-moe` does; attention and shared parts stay.
    ExpertsFirst,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases() {
        for s in Strategy::ALL {
            assert_eq!(s.as_str().parse::<Strategy>().unwrap(), *s);
        }
        assert_eq!("auto".parse::<Strategy>().unwrap(), Strategy::Balanced);
        assert_eq!(
            "balanced-low-0".parse::<Strategy>().unwrap(),
            Strategy::BalancedLow0
        );
        assert!("greedy".parse::<Strategy>().is_err());
    }
}
