//! Derive macros for [`omnipaxos`](https://docs.rs/omnipaxos).
//!
//! `#[derive(Entry)]` implements `omnipaxos::storage::Entry` for a struct or enum. The optional
//! `#[snapshot(MySnapshot)]` attribute names the type used to compact the log; without it the
//! entry uses `omnipaxos::storage::NoSnapshot` (snapshots disabled).
//!
//! ```ignore
//! use omnipaxos::macros::Entry;
//!
//! #[derive(Clone, Debug, Entry)]
//! #[snapshot(KVSnapshot)]
//! pub struct KeyValue { pub key: String, pub value: u64 }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod entry;

use proc_macro::TokenStream;

/// Implements `omnipaxos::storage::Entry` for the annotated struct or enum.
///
/// Use `#[snapshot(Type)]` on the item to pick the snapshot type; the default is
/// `omnipaxos::storage::NoSnapshot`. Generic parameters are carried over to the impl.
#[proc_macro_derive(Entry, attributes(snapshot))]
pub fn derive_entry(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    entry::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
