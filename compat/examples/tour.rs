//! A tour of cancellation: every example of Synapse's "Cancellation"
//! document, ported to Rust, run in order. Each prints what happened: what
//! was cancelled, what each request got, and the logging-context misuse
//! Synapse reports. The guide (`cargo doc --open -p twisted-compat`, module
//! `guide`) explains them step by step.
//!
//! ```sh
//! cargo run -p twisted-compat --example tour
//! ```
//!
//! Each example also runs on its own: `cargo run -p twisted-compat
//! --example NAME`.

// Each example includes the shared `common/mod.rs` itself, so that it also
// builds on its own; here that file is therefore compiled once per example.
#![allow(clippy::duplicate_mod)]

// Each example is a program of its own; the tour runs their `main`s.
#[allow(dead_code)]
#[path = "mechanics.rs"]
mod mechanics;

#[allow(dead_code)]
#[path = "async_function_calls.rs"]
mod async_function_calls;

#[allow(dead_code)]
#[path = "cancel_catching_bad.rs"]
mod cancel_catching_bad;

#[allow(dead_code)]
#[path = "cancel_catching_good.rs"]
mod cancel_catching_good;

#[allow(dead_code)]
#[path = "cancel_catching_ok.rs"]
mod cancel_catching_ok;

#[allow(dead_code)]
#[path = "cancel_catching_good_narrow.rs"]
mod cancel_catching_good_narrow;

#[allow(dead_code)]
#[path = "gather_first_error_bad.rs"]
mod gather_first_error_bad;

#[allow(dead_code)]
#[path = "gather_first_error_good.rs"]
mod gather_first_error_good;

#[allow(dead_code)]
#[path = "shared_deferred_bad.rs"]
mod shared_deferred_bad;

#[allow(dead_code)]
#[path = "shared_deferred_good_stop_cancellation.rs"]
mod shared_deferred_good_stop_cancellation;

#[allow(dead_code)]
#[path = "shared_deferred_good_own_deferred.rs"]
mod shared_deferred_good_own_deferred;

#[allow(dead_code)]
#[path = "uncancelled_processing_bad.rs"]
mod uncancelled_processing_bad;

#[allow(dead_code)]
#[path = "uncancelled_processing_good.rs"]
mod uncancelled_processing_good;

#[allow(dead_code)]
#[path = "uncancelled_processing_ok.rs"]
mod uncancelled_processing_ok;

/// An example: its name and its `main`.
type Runnable = (&'static str, fn());

/// The document's sections, each with its examples.
const SECTIONS: &[(&str, &[Runnable])] = &[
    (
        "Mechanics: cancel() goes down, CancelledError comes up",
        &[
            ("mechanics", mechanics::main),
            ("async_function_calls", async_function_calls::main),
        ],
    ),
    (
        "CancelledErrors: do not swallow them",
        &[
            ("cancel_catching_bad", cancel_catching_bad::main),
            ("cancel_catching_good", cancel_catching_good::main),
            ("cancel_catching_ok", cancel_catching_ok::main),
            (
                "cancel_catching_good_narrow",
                cancel_catching_good_narrow::main,
            ),
        ],
    ),
    (
        "defer.gatherResults: unwrap the FirstError",
        &[
            ("gather_first_error_bad", gather_first_error_bad::main),
            ("gather_first_error_good", gather_first_error_good::main),
        ],
    ),
    (
        "Creation of Deferreds: do not share one that may be cancelled",
        &[
            ("shared_deferred_bad", shared_deferred_bad::main),
            (
                "shared_deferred_good_stop_cancellation",
                shared_deferred_good_stop_cancellation::main,
            ),
            (
                "shared_deferred_good_own_deferred",
                shared_deferred_good_own_deferred::main,
            ),
        ],
    ),
    (
        "Uncancelled processing: do not let it outlive a logging context",
        &[
            (
                "uncancelled_processing_bad",
                uncancelled_processing_bad::main,
            ),
            (
                "uncancelled_processing_good",
                uncancelled_processing_good::main,
            ),
            ("uncancelled_processing_ok", uncancelled_processing_ok::main),
        ],
    ),
];

fn main() {
    println!("Cancellation in Twisted and Synapse, every example of Synapse's document, run.");
    println!("Legend: `-- ` a step of the driver, `[ctx]` a log line with its logging context,");
    println!("`· ` an observation, `=> ` the response sent, `!! ` a misuse report.");
    for (number, (section, examples)) in SECTIONS.iter().enumerate() {
        println!();
        println!("{}. {section}", number + 1);
        println!("{}", "#".repeat(section.chars().count() + 4));
        for (name, main) in examples.iter() {
            println!();
            println!("$ cargo run -p twisted-compat --example {name}");
            main();
        }
    }
}
