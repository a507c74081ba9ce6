//! Compile-fail tests of `#[interface]`: a trait the macro refuses must be reported with a
//! message that says what to change, at the place to change. The expected compiler output is in
//! `tests/ui/*.stderr`; regenerate it with
//! `TRYBUILD=overwrite cargo test -p graft-plugin-api --test macro_errors` and read the diff.

#[test]
fn interface_errors() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass_valid.rs");
    t.compile_fail("tests/ui/generic_trait.rs");
    t.compile_fail("tests/ui/generic_method.rs");
    t.compile_fail("tests/ui/missing_self.rs");
    t.compile_fail("tests/ui/mut_self.rs");
    t.compile_fail("tests/ui/impl_trait_param.rs");
    t.compile_fail("tests/ui/not_serialisable_param.rs");
    t.compile_fail("tests/ui/not_serialisable_return.rs");
}
