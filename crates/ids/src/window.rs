//! The arithmetic both stores run (Rust here, Lua in `redis_store.rs`,
//! checked against each other by a test): a sliding-window score and the
//! back-off of ban lengths. Integers only, in milliseconds.
//!
//! The score over the last `window` is estimated from two fixed windows, as
//! Cloudflare's and nginx's sliding-window counters do: the current fixed
//! window's sum plus the previous one's, weighted by how much of it the
//! sliding window still covers. Two numbers per subject, whatever the rate.

/// One subject's score: the sums of the current fixed window (number
/// `idx`, covering `[idx·w, (idx+1)·w)`) and of the one before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub idx: u64,
    pub cur: u64,
    pub prev: u64,
}

impl Window {
    /// Add `weight` at `now`. Returns the new window and whether the
    /// estimate reached `threshold` (the caller bans, and drops the window:
    /// the next ban needs a whole new score).
    ///
    /// Estimate: `cur + prev · (w − elapsed) / w` ≥ threshold, compared
    /// multiplied out by `w` so nothing is rounded.
    pub fn add(self, now: u64, window: u64, weight: u64, threshold: u64) -> (Window, bool) {
        let window = window.max(1);
        let idx = now / window;
        let (cur, prev) = if self.idx == idx {
            (self.cur, self.prev)
        } else if self.idx.checked_add(1) == Some(idx) {
            (0, self.cur)
        } else {
            (0, 0)
        };
        let cur = cur.saturating_add(weight);
        let elapsed = now - idx * window;
        let scaled = cur
            .saturating_mul(window)
            .saturating_add(prev.saturating_mul(window - elapsed));
        let tipped = scaled >= threshold.saturating_mul(window);
        (Window { idx, cur, prev }, tipped)
    }

    /// Nothing of this window counts any more at `now`.
    pub fn is_stale(&self, now: u64, window: u64) -> bool {
        now / window.max(1) > self.idx.saturating_add(1)
    }
}

/// The `strikes`-th ban's length (1-based; 0 counts as 1):
/// `base · 2^(strikes − 1)`, at most `max`.
pub fn ban_ms(base: u64, max: u64, strikes: u32) -> u64 {
    let shift = strikes.saturating_sub(1).min(40);
    base.saturating_mul(1u64 << shift).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_within_one_window_tips_at_the_threshold_exactly() {
        let mut w = Window::default();
        let now = 1_000_000;
        for i in 1..=9 {
            let (n, tipped) = w.add(now + i, 60_000, 10, 100);
            assert!(!tipped, "after {i} events");
            w = n;
        }
        let (_, tipped) = w.add(now + 10, 60_000, 10, 100);
        assert!(tipped);
    }

    #[test]
    fn the_previous_window_fades_linearly() {
        // 90 points at the very end of window 0
        let (w, tipped) = Window::default().add(59_999, 60_000, 90, 100);
        assert!(!tipped);
        // at the start of window 1 the previous 90 count whole
        let (_, tipped) = w.add(60_000, 60_000, 10, 100);
        assert!(tipped, "90 + 10 ≥ 100");
        // a millisecond later a little less: 90·(59999/60000) + 10 < 100
        let (_, tipped) = w.add(60_001, 60_000, 10, 100);
        assert!(!tipped);
        // halfway through window 1 they count 45: 10 more is not enough
        let (w2, tipped) = w.add(90_000, 60_000, 10, 100);
        assert!(!tipped);
        assert_eq!(
            w2,
            Window {
                idx: 1,
                cur: 10,
                prev: 90
            }
        );
        // two windows later nothing of them is left
        let (w3, tipped) = w.add(120_000, 60_000, 10, 100);
        assert!(!tipped);
        assert_eq!(
            w3,
            Window {
                idx: 2,
                cur: 10,
                prev: 0
            }
        );
        assert!(w3.is_stale(240_000, 60_000));
        assert!(!w3.is_stale(179_999, 60_000));
    }

    #[test]
    fn ban_lengths_double_up_to_the_cap() {
        let lens: Vec<u64> = (1..=6).map(|s| ban_ms(300, 5_000, s)).collect();
        assert_eq!(lens, [300, 600, 1_200, 2_400, 4_800, 5_000]);
        assert_eq!(ban_ms(300, 5_000, 0), 300);
        assert_eq!(ban_ms(u64::MAX / 2, u64::MAX, 4_000_000_000), u64::MAX);
    }
}
