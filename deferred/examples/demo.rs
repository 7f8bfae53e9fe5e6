//! A tour of the Deferred core: a callback chain, an errback that recovers,
//! chaining (a callback returning a Deferred), and cancel() with a
//! canceller reaching the Deferred being waited on. Each step prints the
//! Python line it mirrors and what happened.
//!
//!     cargo run -p twisted-deferred --example demo

use std::cell::RefCell;
use std::rc::Rc;

use twisted_deferred::{CancelledError, Deferred, Failure, capture_unhandled_errors};

fn main() {
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let say = {
        let log = log.clone();
        move |s: String| {
            println!("    {s}");
            log.borrow_mut().push(s);
        }
    };

    println!("1. A callback chain");
    println!(
        "   d = Deferred(); d.addCallback(lambda x: x * 2); d.addCallback(str); d.callback(21)"
    );
    let d: Deferred<i32> = Deferred::new();
    let s1 = say.clone();
    let d2 = d.add_callback(move |x: i32| {
        s1(format!("first callback got {x}"));
        Ok(x * 2)
    });
    let s2 = say.clone();
    let d3 = d2.add_callback(move |x: i32| {
        s2(format!("second callback got {x}"));
        Ok(x.to_string())
    });
    d.callback(21).unwrap();
    println!("    result: {d3:?}");

    println!("\n2. An errback that recovers");
    println!(
        "   d = Deferred(); d.addCallback(raise_it); d.addErrback(lambda f: -1); d.callback(1)"
    );
    let d: Deferred<i32> = Deferred::new();
    let d = d.add_callback(|_x: i32| Err::<i32, _>(Failure::msg("callback failed")));
    let s3 = say.clone();
    d.add_errback(move |f: Failure| {
        s3(format!("errback got {f}"));
        Ok(-1)
    });
    d.cast::<i32>().callback(1).unwrap();
    println!("    result: {d:?}");

    println!("\n3. Chaining: a callback returns a Deferred; the outer one waits");
    println!("   inner = Deferred(); outer.addCallback(lambda _: inner); outer.callback(None)");
    let inner: Deferred<&str> = Deferred::new();
    let outer: Deferred<()> = Deferred::new();
    let returned = inner.clone();
    let outer2 = outer.add_callback(move |()| returned);
    let s4 = say.clone();
    let outer3 = outer2.add_callback(move |v: &str| {
        s4(format!("outer continues with {v:?}"));
        Ok(v.len())
    });
    outer.callback(()).unwrap();
    println!("    outer now: {outer3:?}");
    println!("   inner.callback(\"hello\")");
    inner.callback("hello").unwrap();
    println!("    outer now: {outer3:?}");
    println!("    inner now: {inner:?}  (it handed its result on)");

    println!("\n4. cancel() with a canceller, through a waiting Deferred");
    println!(
        "   request = Deferred(); request.addCallback(lambda _: slow); request.callback(None)"
    );
    println!("   request.cancel()   # reaches slow's canceller, CancelledError comes back up");
    let ((), reports) = capture_unhandled_errors(|| {
        let s5 = say.clone();
        let slow: Deferred<String> = Deferred::with_canceller(move |_d: &Deferred<String>| {
            s5("slow's canceller runs".to_string());
        });
        let request: Deferred<()> = Deferred::new();
        let waited = slow.clone();
        let request2 = request.add_callback(move |()| waited);
        let s6 = say.clone();
        request2.add_errback(move |f: Failure| {
            f.trap::<CancelledError>()?;
            s6("request's errback trapped CancelledError".to_string());
            Ok("cancelled".to_string())
        });
        request.callback(()).unwrap();
        request.cancel().unwrap();
        println!("    slow:    {slow:?}");
        println!("    request: {request2:?}");
    });
    println!("    unhandled errors reported: {}", reports.len());

    assert_eq!(log.borrow().len(), 6, "every step above ran");
}
