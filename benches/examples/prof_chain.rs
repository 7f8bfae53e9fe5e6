//! A loop over one benchmark case, for profiling with callgrind or perf:
//! `prof_chain [N] [end|start|hop]`.
use std::hint::black_box;
use twisted_deferred::Deferred;
fn f(x: i64, a: i64) -> i64 {
    x + a
}
fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let case = args.next().unwrap_or_else(|| "end".into());
    let mut acc = 0;
    for _ in 0..n {
        let d: Deferred<i64> = Deferred::new();
        match case.as_str() {
            "start" => {
                d.callback(black_box(2)).unwrap();
                d.add_callback(|x| Ok(f(x, 1)));
                d.add_callback(|x| Ok(f(x, 2)));
                d.add_callback(|x| Ok(f(x, 3)));
                d.add_callback(|x| Ok(f(x, 4)));
            }
            "hop" => {
                let inner: Deferred<i64> = Deferred::new();
                let i2 = inner.clone();
                d.add_callback(move |_| i2);
                d.callback(0).unwrap();
                inner.callback(black_box(5)).unwrap();
            }
            _ => {
                d.add_callback(|x| Ok(f(x, 1)));
                d.add_callback(|x| Ok(f(x, 2)));
                d.add_callback(|x| Ok(f(x, 3)));
                d.add_callback(|x| Ok(f(x, 4)));
                d.callback(black_box(2)).unwrap();
            }
        }
        acc += d.result().value().unwrap_or(0);
    }
    println!("{acc}");
}
