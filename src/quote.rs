//! The one quoting function: every `+ ` line and every remote command string goes through it.

/// Quotes `word` for a POSIX shell, leaving it bare when that is already safe, so that the
/// printed line reads like what a person would type (`--flake .#bigmachine`).
pub fn quote(word: &str) -> String {
    let bare = !word.is_empty()
        && word.char_indices().all(|(i, c)| {
            c.is_ascii_alphanumeric()
                || "_@%+=:,./-".contains(c)
                // `#` starts a comment and `~` expands only at the start of a word.
                || (i > 0 && (c == '#' || c == '~'))
        });
    if bare {
        word.to_owned()
    } else {
        shell_words::quote(word).into_owned()
    }
}

/// Quotes every word and joins them with spaces: one command line for a shell.
pub fn join<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_words_stay_bare() {
        for w in [
            ".#bigmachine",
            "--flake",
            "root@10.3.2.1",
            "-L",
            "a=b",
            "x~",
            "/nix/store/x-y",
        ] {
            assert_eq!(quote(w), w);
        }
    }

    #[test]
    fn everything_else_is_single_quoted() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("#x"), "'#x'");
        assert_eq!(quote("~x"), "'~x'");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$(reboot)"), "'$(reboot)'");
        assert_eq!(quote("a\nb"), "'a\nb'");
        // Non-ASCII letters need no quotes in a shell.
        assert_eq!(quote("é"), "é");
    }

    #[test]
    fn quoted_words_survive_a_shell_split() {
        let words = ["", "a b", "it's", "\"q\"", "$HOME", "x\\y", "--", "#c", "*"];
        assert_eq!(shell_words::split(&join(&words)).unwrap(), words);
    }
}
