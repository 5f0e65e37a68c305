//! How every comparison is timed: untimed warm-ups, then the two sides alternated round by
//! round (A B A B ...), medians of each side and the median of the per-round ratios; and
//! latency loops, closed (one operation after another) and open (operations due at a
//! constant rate, each timed from when it was due, so a stall counts against every operation
//! queued behind it).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The result of one side of an interleaved comparison.
#[derive(Clone, Debug)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn median(&self) -> f64 {
        median(&self.0)
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Two sides measured alternately: `rounds` timed rounds after one untimed warm-up of each.
/// Each closure returns its figure for one run (higher is better, say records/s).
pub struct Pair {
    pub a: Samples,
    pub b: Samples,
}

/// Runs `a` and `b` once each untimed (warm-ups), then `rounds` times each, alternating
/// which goes first so neither always follows the other's writeback; their results in round
/// order.
fn alternate<T>(rounds: usize, mut a: impl FnMut() -> T, mut b: impl FnMut() -> T) -> (Vec<T>, Vec<T>) {
    a();
    b();
    let (mut xs, mut ys) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for round in 0..rounds {
        if round % 2 == 0 {
            xs.push(a());
            ys.push(b());
        } else {
            ys.push(b());
            xs.push(a());
        }
    }
    (xs, ys)
}

impl Pair {
    pub fn run(rounds: usize, a: impl FnMut() -> f64, b: impl FnMut() -> f64) -> Pair {
        let (xs, ys) = alternate(rounds, a, b);
        Pair {
            a: Samples(xs),
            b: Samples(ys),
        }
    }

    /// As `run`, for runs that give two figures each (say a write and then a read of what was
    /// written): one `Pair` for each figure.
    pub fn run_both(
        rounds: usize,
        a: impl FnMut() -> (f64, f64),
        b: impl FnMut() -> (f64, f64),
    ) -> (Pair, Pair) {
        let (xs, ys) = alternate(rounds, a, b);
        let first = |v: &[(f64, f64)]| Samples(v.iter().map(|p| p.0).collect());
        let second = |v: &[(f64, f64)]| Samples(v.iter().map(|p| p.1).collect());
        (
            Pair {
                a: first(&xs),
                b: first(&ys),
            },
            Pair {
                a: second(&xs),
                b: second(&ys),
            },
        )
    }

    /// The ratio of the medians, a / b.
    pub fn ratio(&self) -> f64 {
        self.a.median() / self.b.median()
    }

    /// The median of the rounds' own ratios (each round's a / b, measured minutes apart at
    /// most), a check on `ratio` when the machine's speed drifts during the run.
    pub fn round_ratio(&self) -> f64 {
        let ratios: Vec<f64> = self.a.0.iter().zip(&self.b.0).map(|(a, b)| a / b).collect();
        median(&ratios)
    }
}

/// A latency histogram in nanoseconds, 1 ns to 100 s, three significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Waits until `due`: sleeps while it is more than 300 us away (on two cores, a thread that
/// spun all the time would take the processor the measured work needs), then spins, so the
/// schedule is kept to a few microseconds.
pub fn wait_until(due: Instant) {
    let slack = Duration::from_micros(300);
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        if due - now > slack {
            std::thread::sleep(due - now - slack / 2);
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Latencies of `op` called at `rate` per second for `for_how_long`, each measured from when
/// it was due.
pub fn open_loop(rate: f64, for_how_long: Duration, mut op: impl FnMut()) -> Histogram<u64> {
    let mut h = histogram();
    let period = Duration::from_secs_f64(1.0 / rate);
    let total = (for_how_long.as_secs_f64() * rate) as u64;
    let origin = Instant::now() + Duration::from_millis(5);
    for i in 0..total {
        let due = origin + period.mul_f64(i as f64);
        wait_until(due);
        op();
        h.saturating_record(due.elapsed().as_nanos() as u64);
    }
    h
}

/// Two latency loops run alternately, `rounds` times each after one untimed warm-up, their
/// histograms merged side by side.
pub fn interleaved_histograms(
    rounds: usize,
    a: impl FnMut() -> Histogram<u64>,
    b: impl FnMut() -> Histogram<u64>,
) -> (Histogram<u64>, Histogram<u64>) {
    let (xs, ys) = alternate(rounds, a, b);
    let merge = |hs: Vec<Histogram<u64>>| {
        hs.into_iter().fold(histogram(), |mut all, h| {
            all.add(h).expect("histograms of the same bounds");
            all
        })
    };
    (merge(xs), merge(ys))
}

/// Latencies of `op` called back to back, `n` times.
pub fn one_after_another(n: usize, mut op: impl FnMut()) -> Histogram<u64> {
    let mut h = histogram();
    for _ in 0..n {
        let start = Instant::now();
        op();
        h.saturating_record(start.elapsed().as_nanos() as u64);
    }
    h
}

/// p50, p99, p99.9 and max of a histogram, in microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    /// The mean: 1 / mean is the rate of one operation after another.
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            p50: us(h.value_at_quantile(0.50)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} / p99 {:.1} / p99.9 {:.1} / max {:.0} us",
            self.p50, self.p99, self.p999, self.max
        )
    }
}
