//! One process as data: its environment additions and its argument list. Plans are made of
//! these; the trace line of each is its `Display`, pasteable into a POSIX shell. A word may
//! hold a value learnt only at run time ([`Value`]): the plan holds the value itself, a dry
//! run prints its placeholder, and the executor fills it in before the process starts.

use std::fmt;

use crate::quote;

/// A value a step learns at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// The system's derivation, evaluated here.
    Drv,
    /// The built system's store path.
    System,
    /// The system a host ran before the deploy, as a reset recorded it.
    Recorded,
    /// That system's profile generation (`system-N-link`).
    RecordedLink,
    /// The number of the generation a rollback switches to.
    Generation,
    /// The numbers of the generations a garbage collection deletes, one word.
    Generations,
}

impl Value {
    /// How a plan shows it before it is known.
    pub fn placeholder(self) -> &'static str {
        match self {
            Value::Drv => "<drv>",
            Value::System => "<system>",
            Value::Recorded => "<recorded>",
            Value::RecordedLink => "<recorded-link>",
            Value::Generation => "<generation>",
            Value::Generations => "<generations>",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Value(Value),
}

/// One word of an argument list: text, with values known only at run time standing in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Word(Vec<Piece>);

impl Word {
    /// A word that is a value, to be filled in at run time.
    pub fn value(value: Value) -> Word {
        Word(vec![Piece::Value(value)])
    }

    /// This word with `more` after it.
    pub fn and(mut self, more: impl Into<Word>) -> Word {
        self.0.extend(more.into().0);
        self
    }

    /// The text, once it holds no value left to fill in.
    pub fn text(&self) -> Option<String> {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Text(t) => Some(t.as_str()),
                Piece::Value(_) => None,
            })
            .collect()
    }

    /// The word with each value still missing shown as its placeholder.
    pub fn shown(&self) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.as_str(),
                Piece::Value(v) => v.placeholder(),
            })
            .collect()
    }

    /// Puts `learnt` where the word holds `value`, so that a word whose values are all
    /// known is one text again.
    pub fn fill(&mut self, value: Value, learnt: &str) {
        let mut filled: Vec<Piece> = Vec::new();
        for piece in self.0.drain(..) {
            let piece = match piece {
                Piece::Value(v) if v == value => Piece::Text(learnt.to_owned()),
                piece => piece,
            };
            match (filled.last_mut(), piece) {
                (Some(Piece::Text(before)), Piece::Text(text)) => before.push_str(&text),
                (_, piece) => filled.push(piece),
            }
        }
        self.0 = filled;
    }

    /// Quoted for a POSIX shell as [`quote::quote`] quotes text. A word holding a value is
    /// single-quoted whole (its value, a store path, never holds a quote).
    pub fn quoted(&self) -> Word {
        if let Some(text) = self.text() {
            return Word::from(quote::quote(&text));
        }
        let escaped = self.0.iter().map(|p| match p {
            Piece::Text(t) => Piece::Text(t.replace('\'', r"'\''")),
            value => value.clone(),
        });
        Word(
            std::iter::once(Piece::Text("'".into()))
                .chain(escaped)
                .chain([Piece::Text("'".into())])
                .collect(),
        )
    }

    /// The words one after another, `separator` between them.
    pub fn join(words: &[Word], separator: &str) -> Word {
        let mut joined = Word::default();
        for (i, word) in words.iter().enumerate() {
            if i > 0 {
                joined = joined.and(separator);
            }
            joined = joined.and(word.clone());
        }
        joined
    }
}

impl From<&str> for Word {
    fn from(text: &str) -> Word {
        Word::from(text.to_owned())
    }
}

impl From<String> for Word {
    fn from(text: String) -> Word {
        Word(vec![Piece::Text(text)])
    }
}

impl From<&String> for Word {
    fn from(text: &String) -> Word {
        Word::from(text.clone())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cmd {
    pub env: Vec<(String, String)>,
    pub argv: Vec<Word>,
    /// Its stdin starts with the sudo password of `--ask-sudo-password` (one line), which
    /// the executor holds: the plan says where the password goes, never what it is.
    pub sudo_password: bool,
}

impl Cmd {
    pub fn new<W: Into<Word>>(argv: impl IntoIterator<Item = W>) -> Cmd {
        Cmd {
            env: Vec::new(),
            argv: argv.into_iter().map(Into::into).collect(),
            sudo_password: false,
        }
    }

    /// The program: always plain text.
    pub fn program(&self) -> &str {
        match self.argv[0].0.as_slice() {
            [Piece::Text(program)] => program,
            _ => "",
        }
    }

    /// The words as the process gets them, once every value is filled in.
    pub fn args(&self) -> impl Iterator<Item = String> + '_ {
        self.argv[1..].iter().map(Word::shown)
    }

    /// Puts `learnt` where the command holds `value`.
    pub fn fill(&mut self, value: Value, learnt: &str) {
        self.argv.iter_mut().for_each(|w| w.fill(value, learnt));
    }
}

/// Where a plan shows that a command's stdin gets the sudo password: a shell comment, so the
/// line stays pasteable.
pub const SUDO_PASSWORD_MARK: &str = "  # <sudo password on stdin>";

/// Pasteable into a POSIX shell: `K=V program args...`, every word quoted as needed.
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.env {
            write!(f, "{k}={} ", quote::quote(v))?;
        }
        let words: Vec<String> = self.argv.iter().map(Word::shown).collect();
        f.write_str(&quote::join(&words))?;
        match self.sudo_password {
            true => f.write_str(SUDO_PASSWORD_MARK),
            false => Ok(()),
        }
    }
}

/// `nix --extra-experimental-features 'nix-command flakes' WORDS...`
pub fn nix<W: Into<Word>>(words: impl IntoIterator<Item = W>) -> Vec<Word> {
    ["nix", "--extra-experimental-features", "nix-command flakes"]
        .map(Word::from)
        .into_iter()
        .chain(words.into_iter().map(Into::into))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_shown_as_its_placeholder_until_filled() {
        let mut cmd = Cmd::new([
            Word::from("nix-store"),
            "--realise".into(),
            Word::value(Value::Drv),
        ]);
        assert_eq!(cmd.to_string(), "nix-store --realise '<drv>'");
        // Text that looks like a placeholder is text: only the value is filled.
        let mut user = Cmd::new(["echo", "<drv>"]);
        user.fill(Value::Drv, "/nix/store/x.drv");
        assert_eq!(user.to_string(), "echo '<drv>'");
        cmd.fill(Value::System, "/nix/store/y");
        assert_eq!(cmd.argv[2].text(), None);
        // A program learnt at run time is a program again.
        let mut activate = Cmd::new([Word::value(Value::System).and("/activate")]);
        activate.fill(Value::System, "/nix/store/y");
        assert_eq!(activate.program(), "/nix/store/y/activate");
        cmd.fill(Value::Drv, "/nix/store/x.drv");
        assert_eq!(cmd.to_string(), "nix-store --realise /nix/store/x.drv");
    }

    #[test]
    fn a_word_with_a_value_quotes_as_its_text_would() {
        let word = Word::value(Value::System).and("/bin/it's");
        let quoted = word.quoted();
        assert_eq!(quoted.shown(), quote::quote("<system>/bin/it's"));
        let mut filled = quoted.clone();
        filled.fill(Value::System, "/nix/store/a-b");
        assert_eq!(
            shell_words::split(&filled.text().unwrap()).unwrap(),
            ["/nix/store/a-b/bin/it's"]
        );
        let script = Word::join(&[Word::from("a b").quoted(), quoted], " && ");
        assert_eq!(script.shown(), "'a b' && '<system>/bin/it'\\''s'");
    }
}
