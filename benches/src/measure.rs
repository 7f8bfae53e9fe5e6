//! The comparison command's own timing loop: warm-up, calibration, then
//! repeated samples and their median, per iteration.

use std::time::Duration;

/// How long and how often to measure.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// A sample runs enough iterations to last at least this long.
    pub min_sample: Duration,
    /// Samples per case.
    pub samples: usize,
    /// Samples per case of a heavy row (one iteration each).
    pub heavy_samples: usize,
    /// Run each case once, unmeasured, before calibrating (always done for
    /// light rows; for heavy rows only when this is set).
    pub heavy_warm_up: bool,
}

impl Settings {
    /// The full run.
    pub fn full() -> Settings {
        Settings {
            min_sample: Duration::from_millis(25),
            samples: 15,
            heavy_samples: 5,
            heavy_warm_up: true,
        }
    }

    /// `--quick`: a rougher table in a fraction of the time.
    pub fn quick() -> Settings {
        Settings {
            min_sample: Duration::from_millis(4),
            samples: 5,
            heavy_samples: 1,
            heavy_warm_up: false,
        }
    }
}

/// A case's timing.
#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    /// The median over samples of the time per iteration, in nanoseconds.
    pub median_ns: f64,
    /// The fastest sample, per iteration, in nanoseconds.
    pub min_ns: f64,
    /// Samples taken.
    pub samples: usize,
    /// Iterations per sample.
    pub iters: u64,
}

impl Measurement {
    /// Median nanoseconds per iteration.
    pub fn ns(&self) -> f64 {
        self.median_ns
    }
}

/// Measures `run` (a case body: `iters` iterations in, timed part out).
pub fn measure(run: &dyn Fn(u64) -> Duration, heavy: bool, settings: &Settings) -> Measurement {
    let mut per_iter: Vec<f64> = Vec::new();
    let iters;
    if heavy {
        if settings.heavy_warm_up {
            run(1);
        }
        iters = 1;
        for _ in 0..settings.heavy_samples.max(1) {
            per_iter.push(ns(run(1)));
        }
    } else {
        run(1);
        let mut n = 1u64;
        loop {
            let elapsed = run(n);
            if elapsed >= settings.min_sample || n >= 1 << 30 {
                per_iter.push(ns(elapsed) / n as f64);
                break;
            }
            let grow = if elapsed.is_zero() {
                10.0
            } else {
                (settings.min_sample.as_secs_f64() / elapsed.as_secs_f64() * 1.2).clamp(2.0, 10.0)
            };
            n = ((n as f64) * grow).ceil() as u64;
        }
        iters = n;
        while per_iter.len() < settings.samples.max(1) {
            per_iter.push(ns(run(n)) / n as f64);
        }
    }
    let min_ns = per_iter.iter().copied().fold(f64::INFINITY, f64::min);
    Measurement {
        median_ns: median(&mut per_iter),
        min_ns,
        samples: per_iter.len(),
        iters,
    }
}

fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

/// The median (the mean of the middle two for an even count; 0 for none).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}
