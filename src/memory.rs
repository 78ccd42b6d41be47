//! The process's memory, from `/proc/self/status`: peak RSS and what is anonymous vs file
//! pages. A load resets the peak when it starts, so its report covers the load alone.

/// Resident memory of this process, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Peak resident set since the last reset (VmHWM).
    pub peak_bytes: u64,
    /// Resident set now (VmRSS).
    pub rss_bytes: u64,
    /// Anonymous memory now (RssAnon): what the process owns.
    pub anon_bytes: u64,
    /// File-backed pages now (RssFile): mapped checkpoint pages, reclaimable page cache.
    pub file_bytes: u64,
}

/// Reads `/proc/self/status`; zeros where it is not available (not Linux).
pub fn current() -> Memory {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Memory::default();
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    Memory {
        peak_bytes: field("VmHWM:"),
        rss_bytes: field("VmRSS:"),
        anon_bytes: field("RssAnon:"),
        file_bytes: field("RssFile:"),
    }
}

/// Resets the peak (VmHWM) to the current RSS. Returns whether the kernel allowed it.
pub fn reset_peak() -> bool {
    if HOLD.with(std::cell::Cell::get) {
        return true;
    }
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

thread_local! {
    static HOLD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// While alive, [`reset_peak`] on this thread does nothing: a load made of several loads (a
/// split model's outer part and blocks) reports the peak of the whole.
pub(crate) struct HoldPeak(bool);

impl HoldPeak {
    /// Holds the peak from now on (until dropped).
    pub(crate) fn start() -> Self {
        HoldPeak(HOLD.with(|h| h.replace(true)))
    }
}

impl Drop for HoldPeak {
    fn drop(&mut self) {
        let was = self.0;
        HOLD.with(|h| h.set(was));
    }
}
