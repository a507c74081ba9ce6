//! A depth limit around any serde deserializer.
//!
//! postcard decodes nested values by recursion and has no limit of its own, so a recursive type
//! in an interface (`enum Expr { Lit(u64), Neg(Box<Expr>) }`) would let a few kilobytes of input
//! overflow the calling thread's stack: not a panic but an abort of the whole process. Every
//! typed decode goes through [`Limited`], which counts how deep the value being decoded is
//! nested (each `Option`, newtype, sequence, tuple, map, struct and enum variant is one level)
//! and refuses input nested deeper than [`MAX_DEPTH`] with an ordinary decode error, as
//! `serde_json` does with the same limit.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// How deep a value crossing an interface may be nested.
pub const MAX_DEPTH: u32 = 128;

/// The nesting of the value being decoded, and whether it went past [`MAX_DEPTH`] (the error a
/// format makes of a custom message may not keep the message).
#[derive(Debug, Default)]
pub(crate) struct Budget {
    depth: Cell<u32>,
    exceeded: Cell<bool>,
}

impl Budget {
    /// Whether the decode was refused for its depth.
    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded.get()
    }
}

/// One more level of nesting for as long as it lives.
struct Level<'a>(&'a Budget);

impl<'a> Level<'a> {
    fn enter<E: de::Error>(budget: &'a Budget) -> Result<Level<'a>, E> {
        let next = budget.depth.get() + 1;
        if next > MAX_DEPTH {
            budget.exceeded.set(true);
            return Err(E::custom(format_args!(
                "the value is nested deeper than {MAX_DEPTH} levels"
            )));
        }
        budget.depth.set(next);
        Ok(Level(budget))
    }
}

impl Drop for Level<'_> {
    fn drop(&mut self) {
        self.0.depth.set(self.0.depth.get().saturating_sub(1));
    }
}

/// `inner`, with the nesting of what it decodes counted in `depth`.
pub(crate) struct Limited<'a, D> {
    pub(crate) inner: D,
    pub(crate) depth: &'a Budget,
}

struct Visit<'a, V> {
    inner: V,
    depth: &'a Budget,
}

struct Seed<'a, S> {
    inner: S,
    depth: &'a Budget,
}

struct Seq<'a, A> {
    inner: A,
    depth: &'a Budget,
}

struct Map<'a, A> {
    inner: A,
    depth: &'a Budget,
}

struct Enum<'a, A> {
    inner: A,
    depth: &'a Budget,
}

struct Variant<'a, A> {
    inner: A,
    depth: &'a Budget,
}

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
                self.inner.$method($($arg,)* Visit { inner: visitor, depth: self.depth })
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limited<'_, D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any(); deserialize_bool(); deserialize_i8(); deserialize_i16();
        deserialize_i32(); deserialize_i64(); deserialize_i128(); deserialize_u8();
        deserialize_u16(); deserialize_u32(); deserialize_u64(); deserialize_u128();
        deserialize_f32(); deserialize_f64(); deserialize_char(); deserialize_str();
        deserialize_string(); deserialize_bytes(); deserialize_byte_buf(); deserialize_option();
        deserialize_unit(); deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str); deserialize_seq();
        deserialize_tuple(len: usize); deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map(); deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier(); deserialize_ignored_any();
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {
        $(
            fn $method<E: de::Error>(self, value: $ty) -> Result<V::Value, E> {
                self.inner.$method(value)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Visit<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool(bool); visit_i8(i8); visit_i16(i16); visit_i32(i32); visit_i64(i64);
        visit_i128(i128); visit_u8(u8); visit_u16(u16); visit_u32(u32); visit_u64(u64);
        visit_u128(u128); visit_f32(f32); visit_f64(f64); visit_char(char); visit_str(&str);
        visit_borrowed_str(&'de str); visit_string(String); visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]); visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<V::Value, D::Error> {
        let _level = Level::enter::<D::Error>(self.depth)?;
        self.inner.visit_some(Limited { inner, depth: self.depth })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, inner: D) -> Result<V::Value, D::Error> {
        let _level = Level::enter::<D::Error>(self.depth)?;
        self.inner.visit_newtype_struct(Limited { inner, depth: self.depth })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, inner: A) -> Result<V::Value, A::Error> {
        let _level = Level::enter::<A::Error>(self.depth)?;
        self.inner.visit_seq(Seq { inner, depth: self.depth })
    }

    fn visit_map<A: MapAccess<'de>>(self, inner: A) -> Result<V::Value, A::Error> {
        let _level = Level::enter::<A::Error>(self.depth)?;
        self.inner.visit_map(Map { inner, depth: self.depth })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, inner: A) -> Result<V::Value, A::Error> {
        let _level = Level::enter::<A::Error>(self.depth)?;
        self.inner.visit_enum(Enum { inner, depth: self.depth })
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, inner: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Limited { inner, depth: self.depth })
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Seq<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.inner.next_element_seed(Seed { inner: seed, depth: self.depth })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Map<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.inner.next_key_seed(Seed { inner: seed, depth: self.depth })
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.next_value_seed(Seed { inner: seed, depth: self.depth })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'a, 'de, A: EnumAccess<'de>> EnumAccess<'de> for Enum<'a, A> {
    type Error = A::Error;
    type Variant = Variant<'a, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let depth = self.depth;
        let (value, inner) = self.inner.variant_seed(Seed { inner: seed, depth })?;
        Ok((value, Variant { inner, depth }))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Variant<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.newtype_variant_seed(Seed { inner: seed, depth: self.depth })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner.tuple_variant(len, Visit { inner: visitor, depth: self.depth })
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.struct_variant(fields, Visit { inner: visitor, depth: self.depth })
    }
}
