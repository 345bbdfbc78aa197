//! Expansion of `#[derive(Entry)]`: reads the optional `#[snapshot(Type)]` attribute and emits
//! one `impl Entry`. Every misuse becomes a `syn::Error` pointing at the offending tokens.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Type};

/// Builds the `impl ::omnipaxos::storage::Entry` for `input`.
pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    if let Data::Union(union) = &input.data {
        return Err(syn::Error::new(
            union.union_token.span,
            "#[derive(Entry)] supports structs and enums, not unions",
        ));
    }
    let snapshot = snapshot_type(input)?
        .map(|ty| quote!(#ty))
        .unwrap_or_else(|| quote!(::omnipaxos::storage::NoSnapshot));
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::omnipaxos::storage::Entry for #name #ty_generics #where_clause {
            type Snapshot = #snapshot;
        }
    })
}

/// The type named by `#[snapshot(Type)]`, if present. Rejects repeated or malformed attributes.
fn snapshot_type(input: &DeriveInput) -> syn::Result<Option<Type>> {
    let mut found: Option<Type> = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("snapshot")) {
        let ty: Type = attr.parse_args().map_err(|err| {
            syn::Error::new(
                err.span(),
                "expected a snapshot type, as in #[snapshot(MySnapshot)]",
            )
        })?;
        if found.is_some() {
            return Err(syn::Error::new_spanned(
                attr,
                "#[snapshot(..)] may be given only once",
            ));
        }
        found = Some(ty);
    }
    Ok(found)
}
