//! The one rule a service name must follow, checked wherever a name enters the runtime.
//!
//! A service name becomes a file name in the state directory (its manifest, its archived
//! builds), so a name with a `/` or a `..` would write outside it. Every name is checked here:
//! the name a service is loaded under, the descriptor's own name, every dependency's name and
//! every name given to [`RuntimeBuilder::require`](crate::RuntimeBuilder::require).

use crate::Error;

/// The longest service name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Checks that `name` is a valid service name: 1 to [`MAX_NAME_LEN`] ASCII characters from
/// `A-Z a-z 0-9 . _ -`, starting with a letter or a digit, and without `..`. In other words
/// `[A-Za-z0-9][A-Za-z0-9._-]{0,63}` with no two dots in a row.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let refuse = |reason| Err(Error::InvalidName { name: name.to_owned(), reason });
    let Some(first) = name.bytes().next() else {
        return refuse("it is empty");
    };
    if name.len() > MAX_NAME_LEN {
        return refuse("it is longer than 64 bytes");
    }
    if !first.is_ascii_alphanumeric() {
        return refuse("it must start with an ASCII letter or digit");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return refuse("only ASCII letters, digits, `.`, `_` and `-` are allowed");
    }
    if name.contains("..") {
        return refuse("it must not contain `..`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(name: &str) -> Option<&'static str> {
        match validate_name(name) {
            Ok(()) => None,
            Err(Error::InvalidName { reason, .. }) => Some(reason),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn ordinary_names_pass() {
        for name in ["greeter", "w0", "front-end", "a.b_c-d", "9lives", &"x".repeat(64)] {
            assert_eq!(reason(name), None, "{name}");
        }
    }

    #[test]
    fn names_that_escape_a_directory_or_are_not_file_names_are_refused() {
        for name in [
            "",
            "../escape",
            "a/b",
            "/abs",
            "..",
            "a..b",
            ".hidden",
            "-flag",
            "_x",
            "sp ace",
            "nul\0",
            "é",
            "back\\slash",
            &"x".repeat(65),
        ] {
            assert!(reason(name).is_some(), "{name:?} passed");
        }
    }

    #[test]
    fn the_rule_matches_a_naive_model_on_every_short_name() {
        // Every name of up to three characters over an alphabet that covers each class.
        let alphabet = ['a', 'Z', '0', '.', '_', '-', '/', ' '];
        let model = |name: &str| {
            let mut chars = name.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
                && !name.contains("..")
        };
        let mut names = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = names
                .iter()
                .flat_map(|n| alphabet.iter().map(move |c| format!("{n}{c}")))
                .collect();
            names.extend(longer);
        }
        names.sort();
        names.dedup();
        for name in names {
            assert_eq!(validate_name(&name).is_ok(), model(&name), "{name:?}");
        }
    }
}
