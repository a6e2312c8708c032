//! Percentiles of measured durations, and the comparison of two sets.

use std::time::Duration;

use serde::Serialize;

/// Percentiles of one set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The value at quantile `q` of sorted samples (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Percentiles {
    pub fn of(samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let total: Duration = sorted.iter().sum();
        Percentiles {
            count: sorted.len(),
            mean_ms: if sorted.is_empty() {
                0.0
            } else {
                ms(total) / sorted.len() as f64
            },
            p50_ms: ms(quantile(&sorted, 0.50)),
            p90_ms: ms(quantile(&sorted, 0.90)),
            p99_ms: ms(quantile(&sorted, 0.99)),
            p999_ms: ms(quantile(&sorted, 0.999)),
            max_ms: ms(sorted.last().copied().unwrap_or_default()),
        }
    }
}

/// The middle of `values` (of an even count, the upper of the two middles); 0
/// for none. How a rung of repeated runs, or a series of pairs, is judged.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// The same requests straight to the mock and through atelier.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Comparison {
    pub direct: Percentiles,
    pub through: Percentiles,
    /// What atelier adds: each percentile through it less the same one direct.
    pub added: Added,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Added {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

impl Comparison {
    pub fn of(direct: &[Duration], through: &[Duration]) -> Self {
        let (direct, through) = (Percentiles::of(direct), Percentiles::of(through));
        Comparison {
            direct,
            through,
            added: Added {
                p50_ms: through.p50_ms - direct.p50_ms,
                p99_ms: through.p99_ms - direct.p99_ms,
                p999_ms: through.p999_ms - direct.p999_ms,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        let p = Percentiles::of(&samples);
        assert_eq!(
            (p.p50_ms, p.p99_ms, p.p999_ms, p.max_ms),
            (500.0, 990.0, 999.0, 1000.0)
        );
        assert_eq!(p.count, 1000);
        assert!((p.mean_ms - 500.5).abs() < 1e-9);
        let one = Percentiles::of(&[Duration::from_millis(3)]);
        assert_eq!((one.p50_ms, one.p999_ms), (3.0, 3.0));
        assert_eq!(Percentiles::of(&[]).count, 0);
    }

    #[test]
    fn the_median_of_runs() {
        assert_eq!(median(&[1.4, 0.7, 1.1]), 1.1);
        assert_eq!(median(&[2.0, 1.0]), 2.0);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn the_added_latency_is_the_difference_of_percentiles() {
        let direct = [Duration::from_millis(10); 100];
        let through = [Duration::from_millis(12); 100];
        let c = Comparison::of(&direct, &through);
        assert!((c.added.p99_ms - 2.0).abs() < 1e-9);
    }
}
