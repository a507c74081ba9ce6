//! The procedural macros of `graft-plugin-api`; use them through that crate
//! (`graft_plugin_api::interface`), which documents them.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, Ident, ItemTrait, LitStr, Pat, PathArguments, ReturnType, Token,
    TraitItem, TraitItemFn, Type,
};

/// Marks a trait as a graft service interface, written once in a crate that the host and the
/// plugins both depend on.
///
/// ```text
/// #[graft_plugin_api::interface(name = "kv", version = "1.1.0")]
/// pub trait Kv {
///     fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
///     fn put(&self, key: &str, value: &[u8]) -> Result<(), KvError>;
/// }
/// ```
///
/// `name` is the interface's name and `version` its semver version. Next to the trait it
/// generates:
/// - `impl Interface for dyn Kv`: the name, the version and each method's description (name,
///   stable id, normalised signature and its fingerprint), which `export_service!` puts in the
///   plugin's descriptor;
/// - `impl<S: Kv> Serve<S> for dyn Kv`: the export glue that decodes a call's arguments,
///   calls `S`'s method and encodes its answer; `export_service!(Type, ..., interface: Kv)`
///   exports it;
/// - `KvClient<T>`: a client with the trait's methods, over a transport `T` (the host's
///   `ServiceHandle`, or `Remote` from `Host::client` in a plugin), each returning the method's
///   `Ok` type or a `ClientError` that keeps the service's `Err` apart from the call's failure.
///
/// The rules, each a compile error that says what to change: the trait and its methods are not
/// generic; each method takes `&self` first (calls arrive on many threads at once); no
/// `async`, `unsafe`, `&mut` parameters, `impl Trait`, trait objects or returned references;
/// and every parameter and return type implements serde's `Serialize` and `Deserialize`
/// (`&str` and `&[u8]` parameters are decoded without a copy). A method without a return type
/// returns `()`. Methods that do not return a `Result` have a client method whose service
/// error is `Infallible`.
#[proc_macro_attribute]
pub fn interface(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = syn::parse_macro_input!(args as Args);
    let item = syn::parse_macro_input!(item as ItemTrait);
    match expand(&args, &item) {
        Ok(tokens) => tokens.into(),
        Err(error) => {
            let error = error.to_compile_error();
            quote!(#item #error).into()
        }
    }
}

/// `name = "...", version = "..."`.
struct Args {
    name: LitStr,
    version: LitStr,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let (mut name, mut version) = (None, None);
        let pairs = Punctuated::<syn::MetaNameValue, Token![,]>::parse_terminated(input)?;
        for pair in pairs {
            let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(value), .. }) = &pair.value else {
                return Err(syn::Error::new(pair.value.span(), "expected a string literal"));
            };
            if pair.path.is_ident("name") {
                name = Some(value.clone());
            } else if pair.path.is_ident("version") {
                version = Some(value.clone());
            } else {
                return Err(syn::Error::new(
                    pair.path.span(),
                    "unknown argument: a graft interface takes `name = \"...\"` and `version = \"...\"`",
                ));
            }
        }
        let missing = |what: &str| {
            syn::Error::new(
                Span::call_site(),
                format!(
                    "missing `{what} = \"...\"`: write #[interface(name = \"kv\", version = \"1.0.0\")]"
                ),
            )
        };
        let name = name.ok_or_else(|| missing("name"))?;
        let version = version.ok_or_else(|| missing("version"))?;
        if !is_semver(&version.value()) {
            return Err(syn::Error::new(
                version.span(),
                "the interface version must be a semver version, such as \"1.2.0\"",
            ));
        }
        if name.value().is_empty() {
            return Err(syn::Error::new(name.span(), "the interface name must not be empty"));
        }
        Ok(Args { name, version })
    }
}

fn is_semver(version: &str) -> bool {
    let core = version.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// How one parameter crosses the wire.
enum Param {
    /// `&str`: decoded borrowed from the input.
    Str,
    /// `&[u8]`: one run of bytes, decoded borrowed.
    Slice,
    /// `Vec<u8>`: one run of bytes, decoded into a new vector.
    ByteVec,
    /// `&T`: `T` decoded, passed by reference.
    Ref(Type),
    /// `T`: decoded and passed by value.
    Owned(Type),
}

struct MethodInfo<'a> {
    method: &'a TraitItemFn,
    name: String,
    id: u32,
    /// The parameters after `&self`: their names and how they cross.
    params: Vec<(Ident, &'a Type, Param)>,
    /// The return type as written (`()` if none).
    output: Type,
    signature: String,
}

fn expand(args: &Args, item: &ItemTrait) -> syn::Result<Tokens> {
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        return Err(generics_error(
            &item.generics,
            "a graft interface cannot be generic: its methods cross a C ABI, so every type in \
             them must be concrete; remove the trait's generic parameters and write the \
             concrete types in its methods",
        ));
    }
    let mut methods = Vec::new();
    for trait_item in &item.items {
        match trait_item {
            TraitItem::Fn(method) => methods.push(method_info(method)?),
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    "a graft interface may only hold methods (no associated types or constants)",
                ));
            }
        }
    }
    let mut ids = std::collections::HashMap::new();
    for method in &methods {
        if let Some(other) = ids.insert(method.id, &method.name) {
            return Err(syn::Error::new(
                method.method.sig.ident.span(),
                format!(
                    "the method ids of `{other}` and `{}` collide (both hash to {:#010x}); rename one",
                    method.name, method.id
                ),
            ));
        }
    }

    let api = api_path();
    let trait_name = &item.ident;
    let vis = &item.vis;
    let client = format_ident!("{}Client", trait_name);
    let (name, version) = (&args.name, &args.version);

    let specs = methods.iter().map(|m| {
        let (method_name, signature) = (&m.name, &m.signature);
        quote!(#api::abi::MethodSpec::new(#method_name, #signature))
    });
    let checks = methods.iter().flat_map(|m| wire_checks(&api, m));
    let id_checks = methods.iter().map(|m| {
        let (method_name, id) = (&m.name, m.id);
        quote!(assert!(#api::typed::fnv1a_32(#method_name.as_bytes()) == #id);)
    });
    let arms = methods.iter().map(|m| dispatch_arm(&api, trait_name, m));
    let client_methods = methods.iter().map(|m| client_method(&api, m));
    let client_doc = format!(
        "A typed client of the `{}` interface ({} {}): each method calls the service through \
         its transport (a `graft_runtime::ServiceHandle` on the host, a \
         `graft_plugin_api::Remote` in a plugin).",
        name.value(),
        name.value(),
        version.value()
    );

    Ok(quote! {
        #item

        impl #api::typed::Interface for dyn #trait_name {
            const NAME: &'static str = #name;
            const VERSION: &'static str = #version;
            const METHODS: &'static [#api::abi::MethodSpec] = &[#(#specs),*];
        }

        const _: () = {
            #(#id_checks)*
            #(#checks)*
        };

        impl<S: #trait_name> #api::typed::Serve<S> for dyn #trait_name {
            fn dispatch(
                service: &S,
                method: u32,
                input: &[u8],
                output: &mut #api::Output<'_>,
            ) -> ::core::result::Result<(), #api::Error> {
                let _ = (&service, &input, &output);
                match method {
                    #(#arms)*
                    _ => ::core::result::Result::Err(#api::Error::unknown_method(
                        &::std::format!("#{method:#010x}"),
                    )),
                }
            }
        }

        #[doc = #client_doc]
        #[derive(Clone)]
        #vis struct #client<T> {
            transport: T,
        }

        impl<T> ::core::fmt::Debug for #client<T> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#client)).finish_non_exhaustive()
            }
        }

        impl<T: #api::typed::Transport> #api::typed::Client<T> for #client<T> {
            type Interface = dyn #trait_name;

            fn with_transport(transport: T) -> Self {
                #client { transport }
            }
        }

        impl<T: #api::typed::Transport> #client<T> {
            /// The client calling through `transport`.
            #vis fn new(transport: T) -> Self {
                #client { transport }
            }

            /// The transport it calls through.
            #vis fn transport(&self) -> &T {
                &self.transport
            }

            #(#client_methods)*
        }
    })
}

/// The path of `graft-plugin-api` as the crate expanding the macro names it.
fn api_path() -> Tokens {
    use proc_macro_crate::{FoundCrate, crate_name};
    match crate_name("graft-plugin-api") {
        // Inside graft-plugin-api itself (its unit tests, doctests and integration tests):
        // the crate names itself `graft_plugin_api` (`extern crate self as graft_plugin_api`).
        Ok(FoundCrate::Itself) => quote!(::graft_plugin_api),
        Ok(FoundCrate::Name(name)) => {
            let name = Ident::new(&name, Span::call_site());
            quote!(::#name)
        }
        Err(_) => quote!(::graft_plugin_api),
    }
}

fn method_info(method: &TraitItemFn) -> syn::Result<MethodInfo<'_>> {
    let sig = &method.sig;
    let name = sig.ident.to_string();
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(generics_error(
            &sig.generics,
            &format!(
                "`{name}` cannot be generic: a graft interface method crosses a C ABI, so remove \
                 its generic parameters and give it concrete parameter and return types"
            ),
        ));
    }
    if let Some(asyncness) = sig.asyncness {
        return Err(syn::Error::new(
            asyncness.span(),
            format!("`{name}` cannot be async: a graft call answers before it returns"),
        ));
    }
    if let Some(unsafety) = sig.unsafety {
        return Err(syn::Error::new(unsafety.span(), format!("`{name}` cannot be unsafe")));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(variadic.span(), format!("`{name}` cannot be variadic")));
    }
    let needs_self = || {
        syn::Error::new(
            sig.paren_token.span.join(),
            format!(
                "`{name}` must take `&self` as its first parameter (`fn {name}(&self, ...)`): a \
                 service's methods are called on its shared instance, from many threads at once \
                 (keep mutable state behind a Mutex or an atomic)"
            ),
        )
    };
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(receiver))
            if receiver.reference.is_some()
                && receiver.mutability.is_none()
                && receiver.colon_token.is_none() => {}
        Some(FnArg::Receiver(receiver)) => {
            return Err(syn::Error::new_spanned(
                receiver,
                format!(
                    "`{name}` must take `&self`, not `{}`: a service's methods are called on its \
                     shared instance, from many threads at once (keep mutable state behind a \
                     Mutex or an atomic)",
                    receiver_text(receiver)
                ),
            ));
        }
        _ => return Err(needs_self()),
    }
    let mut params = Vec::new();
    let mut types = Vec::new();
    for (n, input) in inputs.enumerate() {
        let FnArg::Typed(typed) = input else { return Err(needs_self()) };
        let ident = match &*typed.pat {
            Pat::Ident(pat) => pat.ident.clone(),
            _ => format_ident!("arg{}", n),
        };
        reject_unsupported(&typed.ty, &name, "take")?;
        let ty = &*typed.ty;
        types.push(normalise(&quote!(#ty).to_string()));
        params.push((ident, ty, classify(ty)));
    }
    let output = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => {
            reject_unsupported(ty, &name, "return")?;
            if matches!(**ty, Type::Reference(_)) {
                return Err(syn::Error::new_spanned(
                    ty,
                    format!(
                        "`{name}` cannot return a reference: its answer is encoded and sent \
                         back, so return an owned type (`String` for `&str`, `Vec<u8>` for \
                         `&[u8]`)"
                    ),
                ));
            }
            (**ty).clone()
        }
    };
    let signature = format!("fn({})->{}", types.join(","), normalise(&quote!(#output).to_string()));
    Ok(MethodInfo { method, id: fnv1a_32(name.as_bytes()), name, params, output, signature })
}

/// The error for generic parameters or a where clause, spanning all of `<...>` (or the where
/// clause when there are no parameters).
fn generics_error(generics: &syn::Generics, message: &str) -> syn::Error {
    match &generics.where_clause {
        Some(where_clause) if generics.params.is_empty() => {
            syn::Error::new_spanned(where_clause, message)
        }
        _ => syn::Error::new_spanned(generics, message),
    }
}

/// A receiver as written (`&mut self`, `self`, `self: Box<Self>`), for messages.
fn receiver_text(receiver: &syn::Receiver) -> String {
    let mutability = if receiver.mutability.is_some() { "mut " } else { "" };
    match (&receiver.reference, &receiver.colon_token) {
        (_, Some(_)) => {
            let ty = &receiver.ty;
            format!("{mutability}self: {}", normalise(&quote!(#ty).to_string()))
        }
        (Some((_, lifetime)), None) => {
            let lifetime = lifetime.as_ref().map(|l| format!("{l} ")).unwrap_or_default();
            format!("&{lifetime}{mutability}self")
        }
        (None, None) => format!("{mutability}self"),
    }
}

/// `impl Trait` and trait objects cannot cross an interface; `role` is `take` or `return`.
fn reject_unsupported(ty: &Type, method: &str, role: &str) -> syn::Result<()> {
    let bad = match ty {
        Type::ImplTrait(_) => Some("`impl Trait`"),
        Type::TraitObject(_) => Some("a trait object"),
        Type::BareFn(_) => Some("a function pointer"),
        Type::Ptr(_) => Some("a raw pointer"),
        Type::Infer(_) => Some("`_`"),
        _ => None,
    };
    if let Some(bad) = bad {
        return Err(syn::Error::new_spanned(
            ty,
            format!(
                "`{method}` cannot {role} {bad}: every type in a graft interface is encoded to \
                 cross a C ABI, so write a concrete, serialisable type instead (one with serde's \
                 `Serialize` and `Deserialize`)"
            ),
        ));
    }
    if let Type::Reference(reference) = ty {
        if reference.mutability.is_some() {
            return Err(syn::Error::new_spanned(
                ty,
                format!(
                    "`{method}` cannot take `&mut`: arguments are decoded from the call's input, \
                     so the caller could never see a change; return the new value instead"
                ),
            ));
        }
        return reject_unsupported(&reference.elem, method, role);
    }
    Ok(())
}

fn classify(ty: &Type) -> Param {
    if let Type::Reference(reference) = ty {
        match &*reference.elem {
            Type::Path(path) if path.path.is_ident("str") => return Param::Str,
            Type::Slice(slice) if is_u8(&slice.elem) => return Param::Slice,
            elem => return Param::Ref(elem.clone()),
        }
    }
    if is_byte_vec(ty) {
        return Param::ByteVec;
    }
    Param::Owned(ty.clone())
}

fn is_u8(ty: &Type) -> bool {
    matches!(ty, Type::Path(path) if path.path.is_ident("u8"))
}

/// The single generic type argument of `ty` if its last path segment is `name`.
fn generic_args<'a>(ty: &'a Type, name: &str) -> Option<Vec<&'a Type>> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    Some(
        args.args
            .iter()
            .filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
    )
}

fn is_byte_vec(ty: &Type) -> bool {
    generic_args(ty, "Vec").is_some_and(|args| args.len() == 1 && is_u8(args[0]))
}

/// The type an answer of type `ty` crosses as: `ty` with each `Vec<u8>` inside `Option` and
/// `Result` replaced by `serde_bytes::ByteBuf`, which postcard encodes the same way but copies
/// in one run. `None` when nothing changes.
fn wire_type(api: &Tokens, ty: &Type) -> Option<Tokens> {
    if is_byte_vec(ty) {
        return Some(quote!(#api::typed::__private::serde_bytes::ByteBuf));
    }
    if let Some(args) = generic_args(ty, "Option").filter(|a| a.len() == 1) {
        let inner = wire_type(api, args[0])?;
        return Some(quote!(::core::option::Option<#inner>));
    }
    if let Some(args) = generic_args(ty, "Result").filter(|a| a.len() == 2) {
        let (ok, err) = (wire_type(api, args[0]), wire_type(api, args[1]));
        if ok.is_none() && err.is_none() {
            return None;
        }
        let (t, e) = (args[0], args[1]);
        let ok = ok.unwrap_or_else(|| quote!(#t));
        let err = err.unwrap_or_else(|| quote!(#e));
        return Some(quote!(::core::result::Result<#ok, #err>));
    }
    None
}

/// An expression converting `value` of type `ty` to its wire type (`to_wire`) or back.
fn convert(api: &Tokens, ty: &Type, value: Tokens, to_wire: bool) -> Tokens {
    if wire_type(api, ty).is_none() {
        return value;
    }
    if is_byte_vec(ty) {
        return match to_wire {
            true => quote!(#api::typed::__private::serde_bytes::ByteBuf::from(#value)),
            false => quote!(#value.into_vec()),
        };
    }
    if let Some(args) = generic_args(ty, "Option").filter(|a| a.len() == 1) {
        let inner = convert(api, args[0], quote!(v), to_wire);
        return quote!(#value.map(|v| #inner));
    }
    if let Some(args) = generic_args(ty, "Result").filter(|a| a.len() == 2) {
        let ok = convert(api, args[0], quote!(v), to_wire);
        let err = convert(api, args[1], quote!(e), to_wire);
        return quote!(#value.map(|v| #ok).map_err(|e| #err));
    }
    value
}

/// Compile-time checks that every parameter and return type can cross, reported where the type
/// is written.
fn wire_checks(api: &Tokens, method: &MethodInfo<'_>) -> Vec<Tokens> {
    let mut checks = Vec::new();
    for (_, written, param) in &method.params {
        let ty = match param {
            Param::Str | Param::Slice | Param::ByteVec => continue,
            Param::Ref(ty) | Param::Owned(ty) => ty,
        };
        let span = written.span();
        checks.push(quote_spanned!(span=> #api::typed::assert_wire::<#ty>();));
    }
    let output = &method.output;
    let span = method.method.sig.output.span();
    checks.push(quote_spanned!(span=> #api::typed::assert_wire::<#output>();));
    checks
}

fn dispatch_arm(api: &Tokens, trait_name: &Ident, method: &MethodInfo<'_>) -> Tokens {
    let (id, name, ident) = (method.id, &method.name, &method.method.sig.ident);
    let bytes = quote!(#api::typed::__private::serde_bytes);
    let names: Vec<Ident> = (0..method.params.len()).map(|n| format_ident!("a{}", n)).collect();
    let wire_types = method.params.iter().map(|(_, ty, param)| match param {
        Param::Str => quote!(&str),
        Param::Slice => quote!(&#bytes::Bytes),
        Param::ByteVec => quote!(#bytes::ByteBuf),
        Param::Ref(ty) => quote!(#ty),
        Param::Owned(_) => quote!(#ty),
    });
    let passed = method.params.iter().zip(&names).map(|((_, _, param), name)| match param {
        Param::Str | Param::Owned(_) => quote!(#name),
        Param::Slice => quote!(&**#name),
        Param::ByteVec => quote!(#name.into_vec()),
        Param::Ref(_) => quote!(&#name),
    });
    let answer = convert(api, &method.output, quote!(answer), true);
    let (args_span, output_span) = signature_spans(method);
    let decode = respan(quote!(#api::typed::decode_args(#name, input)), args_span);
    let encode = respan(quote!(#api::typed::encode_answer(#name, &#answer, output)), output_span);
    // Nothing to decode or encode: checked and skipped, so that a no-op costs a no-op.
    let decode = match method.params.is_empty() {
        true => quote!(#api::typed::no_args(#name, input)),
        false => decode,
    };
    let unit = matches!(&method.output, Type::Tuple(tuple) if tuple.elems.is_empty());
    let encode = match unit {
        true => quote!({
            let () = answer;
            ::core::result::Result::Ok(())
        }),
        false => encode,
    };
    quote! {
        #id => {
            let (#(#names,)*): (#(#wire_types,)*) = #decode?;
            let answer = <S as #trait_name>::#ident(service, #(#passed),*);
            #encode
        }
    }
}

fn client_method(api: &Tokens, method: &MethodInfo<'_>) -> Tokens {
    let (id, name, ident) = (method.id, &method.name, &method.method.sig.ident);
    let bytes = quote!(#api::typed::__private::serde_bytes);
    let docs = method.method.attrs.iter().filter(|a| a.path().is_ident("doc"));
    let params = method.params.iter().map(|(name, ty, _)| quote!(#name: #ty));
    let encoded = method.params.iter().map(|(name, _, param)| match param {
        Param::Slice => quote!(#bytes::Bytes::new(#name)),
        Param::ByteVec => quote!(#bytes::Bytes::new(&#name)),
        _ => quote!(&#name),
    });
    let output = &method.output;
    let (ok, err, finish) = match generic_args(output, "Result").filter(|a| a.len() == 2) {
        Some(args) => {
            let (ok, err) = (args[0], args[1]);
            (quote!(#ok), quote!(#err), quote!(value.map_err(#api::ClientError::Service)))
        }
        None => (quote!(#output), quote!(::core::convert::Infallible), quote!(Ok(value))),
    };
    let wire = wire_type(api, output).unwrap_or_else(|| quote!(#output));
    let from_wire = convert(api, output, quote!(wire), false);
    let (args_span, output_span) = signature_spans(method);
    let encode =
        respan(quote!(#api::typed::encode_args(#name, &(#(#encoded,)*), input)), args_span);
    // A call with nothing to encode either way need not reach the thread's buffers.
    let unit = matches!(output, Type::Tuple(tuple) if tuple.elems.is_empty());
    let buffers = match method.params.is_empty() && unit {
        true => quote!(with_fresh_buffers),
        false => quote!(with_buffers),
    };
    let decode = respan(quote!(#api::typed::decode_answer(#name, output)), output_span);
    quote! {
        #(#docs)*
        pub fn #ident(&self, #(#params),*)
            -> ::core::result::Result<#ok, #api::ClientError<#err, T::Error>>
        {
            const METHOD: #api::typed::Method = #api::typed::Method { id: #id, name: #name };
            #api::typed::#buffers(|input, output| {
                #encode?;
                self.transport
                    .call_method(METHOD, input, output)
                    .map_err(#api::ClientError::Call)?;
                let wire: #wire = #decode?;
                let value: #output = #from_wire;
                #finish
            })
        }
    }
}

/// Where a method's parameters (its parenthesised list) and its return type are written: the
/// generated code that encodes and decodes them is spanned there, so that a type that cannot
/// cross is reported in the signature, not on the whole `#[interface]` attribute.
fn signature_spans(method: &MethodInfo<'_>) -> (Span, Span) {
    let sig = &method.method.sig;
    let args = sig.paren_token.span.join();
    let output = match &sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => Span::call_site(),
    };
    (Span::call_site().located_at(args), Span::call_site().located_at(output))
}

/// `tokens`, each shown at `span` (keeping the hygiene of `span`).
fn respan(tokens: Tokens, span: Span) -> Tokens {
    tokens
        .into_iter()
        .map(|mut token| {
            if let proc_macro2::TokenTree::Group(group) = &token {
                let mut inner =
                    proc_macro2::Group::new(group.delimiter(), respan(group.stream(), span));
                inner.set_span(span);
                token = proc_macro2::TokenTree::Group(inner);
            } else {
                token.set_span(span);
            }
            token
        })
        .collect()
}

/// Token text with whitespace kept only between two word characters.
fn normalise(text: &str) -> String {
    let mut out = String::new();
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space && out.chars().last().is_some_and(is_word) && is_word(c) {
            out.push(' ');
        }
        pending_space = false;
        out.push(c);
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '\''
}

fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for &b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}
