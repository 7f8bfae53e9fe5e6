//! `#[cancellable]`, Synapse's `@cancellable` decorator
//! (`synapse.util.cancellation`), for `twisted-compat`.
//!
//! Use it through `twisted_compat::cancellable`, whose documentation has the
//! runnable examples; this crate only holds the attribute, because a
//! procedural macro needs a crate of its own.
//!
//! # What the attribute does
//!
//! Python's decorator sets `function.cancellable = True` and returns the
//! function; `is_function_cancellable(f)` reads the attribute. A Rust
//! function carries no attributes at run time, so the mark travels in the
//! function's *return type* instead:
//!
//! ```text
//! #[cancellable]
//! async fn on_get(&self, request: SynapseRequest) -> Result<(u16, Json), Failure> { body }
//! ```
//!
//! becomes
//!
//! ```text
//! fn on_get(&self, request: SynapseRequest)
//!     -> ::twisted_compat::Cancellable<impl Future<Output = Result<(u16, Json), Failure>>>
//! {
//!     ::twisted_compat::cancellable_marker::__mark::<Result<(u16, Json), Failure>, _>(async move {
//!         let request = request;
//!         body
//!     })
//! }
//! ```
//!
//! `Cancellable<F>` is `IntoFuture` with `F` as its future, so callers
//! `.await` the function exactly as before, at no cost, and
//! `twisted_compat::is_function_cancellable(&on_get)` answers from the return
//! type without calling anything. Everything else about the function stays:
//! name, visibility, generics, `where` clauses, other attributes, docs.
//!
//! Limits, all reported at compile time:
//!
//! * only `async fn`s (free functions, inherent methods, any receiver) can
//!   be marked; a trait method can be marked only if the trait declares the
//!   `Cancellable<…>` return type itself;
//! * the returned `impl Future` captures every lifetime of the arguments,
//!   which is what edition 2024 does (this workspace's edition); in an older
//!   edition a marked function borrowing its arguments does not compile;
//! * the expansion names `::twisted_compat`: a crate that renames that
//!   dependency cannot use the attribute.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Pat, ReturnType, Type};

/// Synapse's `@cancellable`: marks an `async fn` as audited for
/// cancellation. The mark is read at run time by
/// `twisted_compat::is_function_cancellable`, by the HTTP layer (a
/// cancellable handler is cancelled when its client disconnects) and by
/// `ResponseCache` (pruning may cancel a cancellable computation).
///
/// See `twisted_compat::cancellable` for examples; the crate documentation
/// explains the expansion.
#[proc_macro_attribute]
pub fn cancellable(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = TokenStream2::from(attr);
    if let Some(first) = attr.clone().into_iter().next() {
        return compile_error(first.span(), "#[cancellable] takes no arguments");
    }
    let function = match syn::parse::<ItemFn>(item) {
        Ok(f) => f,
        Err(e) => {
            return compile_error(
                e.span(),
                "#[cancellable] applies to an `async fn` with a body (Synapse's @cancellable on a coroutine function)",
            );
        }
    };
    expand(function).into()
}

fn compile_error(span: Span, message: &str) -> TokenStream {
    quote_spanned!(span=> ::core::compile_error!(#message);).into()
}

fn expand(mut function: ItemFn) -> TokenStream2 {
    let sig = &mut function.sig;
    let Some(asyncness) = sig.asyncness.take() else {
        return quote_spanned!(sig.fn_token.span()=>
            ::core::compile_error!("#[cancellable] marks an `async fn`: a cancellable function is one whose awaits may be cancelled");
        );
    };
    let output: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    // Rebind every argument inside the async block, as `async fn` does: the
    // future owns all of them from the start and drops them at its end.
    let mut rebind = Vec::new();
    for (index, input) in sig.inputs.iter_mut().enumerate() {
        match input {
            FnArg::Receiver(receiver) => {
                if receiver.reference.is_none() {
                    // `self` by value: keep it alive for the whole future.
                    rebind.push(quote!(let _ = &self;));
                }
            }
            FnArg::Typed(typed) => {
                let plain = match &*typed.pat {
                    Pat::Ident(ident) if ident.by_ref.is_none() && ident.subpat.is_none() => {
                        Some((ident.ident.clone(), ident.mutability.is_some()))
                    }
                    _ => None,
                };
                match plain {
                    Some((name, mutable)) => {
                        let mutability = mutable.then(|| quote!(mut));
                        rebind.push(quote!(let #mutability #name = #name;));
                        if let Pat::Ident(ident) = &mut *typed.pat {
                            ident.mutability = None;
                        }
                    }
                    None => {
                        let name = format_ident!("__cancellable_arg{}", index);
                        let pattern = typed.pat.to_token_stream();
                        rebind.push(quote!(let #pattern = #name;));
                        *typed.pat = syn::parse_quote!(#name);
                    }
                }
            }
        }
    }
    let span = asyncness.span();
    sig.output = syn::parse_quote_spanned!(span=>
        -> ::twisted_compat::Cancellable<impl ::core::future::Future<Output = #output>>
    );
    let block = &function.block;
    // The output type is named to the async block, so that `?` and bare
    // `return`s inside it infer as they do in the `async fn`; a type
    // containing `impl Trait` cannot be named there and is left to
    // inference.
    let hint = if mentions_impl(output.to_token_stream()) {
        quote!(_)
    } else {
        output.to_token_stream()
    };
    let body: syn::Block = syn::parse_quote_spanned!(span=> {
        ::twisted_compat::cancellable_marker::__mark::<#hint, _>(async move {
            #(#rebind)*
            #block
        })
    });
    *function.block = body;
    function.into_token_stream()
}

/// Whether a type's tokens contain `impl` (an `impl Trait` anywhere).
fn mentions_impl(tokens: TokenStream2) -> bool {
    tokens.into_iter().any(|token| match token {
        TokenTree::Ident(ident) => ident == "impl",
        TokenTree::Group(group) => mentions_impl(group.stream()),
        _ => false,
    })
}
