//! A `getopt_long(3)` work-alike, as glibc implements it for an option string without a leading `+` or `-`.
//!
//! - Options and positional arguments may interleave (GNU permutation): positionals are handed back in order.
//! - `--` ends option processing; a lone `-` is a positional.
//! - Short options cluster (`-dvj`); a required argument is the rest of the cluster or the next argument
//!   (`-Ddir`, `-D dir`); an optional argument is only the rest of the cluster (`-v4`).
//! - Long options take `--name=value`, or the next argument when the argument is required; an optional
//!   argument is only `--name=value`. A unique prefix abbreviates a long option; an exact name always wins; a
//!   prefix matching several entries that do the same thing (same argument kind, same action) picks the first.
//!
//! Like CRIU (which runs getopt over each configuration source in turn), the caller applies each option as it
//! is returned, so the first bad option in command-line order is the one reported.
//!
//! # References
//! - [getopt_long(3)](https://man7.org/linux/man-pages/man3/getopt_long.3.html)

use super::ConfigError;

/// Whether an option takes an argument (`no_argument`, `required_argument`, `optional_argument`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArgKind {
    /// `no_argument`
    None,
    /// `required_argument`
    Required,
    /// `optional_argument`
    Optional,
}

/// One entry of the long option table.
#[derive(Debug, Clone)]
pub(crate) struct LongOpt<I> {
    pub(crate) name: String,
    pub(crate) kind: ArgKind,
    pub(crate) id: I,
}

/// One entry of the short option table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShortOpt<I> {
    pub(crate) ch: char,
    pub(crate) kind: ArgKind,
    pub(crate) id: I,
}

/// What the parser found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item<I> {
    /// An option, with its argument and the spelling used in messages (`-D`, `--images-dir`).
    Opt {
        id: I,
        arg: Option<String>,
        spelled: String,
    },
    /// A non-option argument.
    Positional(String),
}

/// Iterates over the options and positionals of one argument vector (without `argv[0]`).
#[derive(Debug)]
pub(crate) struct Getopt<'t, I> {
    args: Vec<String>,
    next: usize,
    /// Argument index and byte offset of the next short option inside a cluster.
    cluster: Option<(usize, usize)>,
    only_positionals: bool,
    shorts: &'t [ShortOpt<I>],
    longs: &'t [LongOpt<I>],
}

impl<'t, I: Copy + PartialEq> Getopt<'t, I> {
    pub(crate) fn new(
        args: Vec<String>,
        shorts: &'t [ShortOpt<I>],
        longs: &'t [LongOpt<I>],
    ) -> Self {
        Self {
            args,
            next: 0,
            cluster: None,
            only_positionals: false,
            shorts,
            longs,
        }
    }

    fn take_next_arg(&mut self) -> Option<String> {
        let arg = self.args.get(self.next).cloned();
        if arg.is_some() {
            self.next += 1;
        }
        arg
    }

    fn short_at(&mut self, idx: usize, pos: usize) -> Result<Item<I>, ConfigError> {
        let word = &self.args[idx];
        let ch = word[pos..]
            .chars()
            .next()
            .expect("cluster positions always point at a character");
        let rest_at = pos + ch.len_utf8();
        let rest = word[rest_at..].to_owned();
        let Some(opt) = self.shorts.iter().find(|s| s.ch == ch) else {
            return Err(ConfigError::InvalidShortOption { option: ch });
        };
        let spelled = format!("-{ch}");
        let arg = match opt.kind {
            ArgKind::None => {
                if !rest.is_empty() {
                    self.cluster = Some((idx, rest_at));
                }
                None
            }
            ArgKind::Optional => (!rest.is_empty()).then_some(rest),
            ArgKind::Required if !rest.is_empty() => Some(rest),
            ArgKind::Required => match self.take_next_arg() {
                Some(a) => Some(a),
                None => return Err(ConfigError::MissingArgument { option: spelled }),
            },
        };
        Ok(Item::Opt {
            id: opt.id,
            arg,
            spelled,
        })
    }

    fn long(&mut self, body: &str) -> Result<Item<I>, ConfigError> {
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        let opt = self.lookup_long(name)?;
        let spelled = format!("--{}", opt.name);
        let arg = match opt.kind {
            ArgKind::None if inline.is_some() => {
                return Err(ConfigError::UnexpectedArgument { option: spelled });
            }
            ArgKind::None => None,
            ArgKind::Optional => inline,
            ArgKind::Required => match inline.or_else(|| self.take_next_arg()) {
                Some(a) => Some(a),
                None => return Err(ConfigError::MissingArgument { option: spelled }),
            },
        };
        Ok(Item::Opt {
            id: opt.id,
            arg,
            spelled,
        })
    }

    fn lookup_long(&self, name: &str) -> Result<&'t LongOpt<I>, ConfigError> {
        let unknown = || ConfigError::UnknownOption {
            option: format!("--{name}"),
        };
        if name.is_empty() {
            return Err(unknown());
        }
        if let Some(exact) = self.longs.iter().find(|l| l.name == name) {
            return Ok(exact);
        }
        let candidates: Vec<&'t LongOpt<I>> = self
            .longs
            .iter()
            .filter(|l| l.name.starts_with(name))
            .collect();
        let Some(first) = candidates.first().copied() else {
            return Err(unknown());
        };
        if candidates
            .iter()
            .all(|c| c.kind == first.kind && c.id == first.id)
        {
            return Ok(first);
        }
        Err(ConfigError::AmbiguousOption {
            option: format!("--{name}"),
            candidates: candidates.iter().map(|c| format!("--{}", c.name)).collect(),
        })
    }
}

impl<I: Copy + PartialEq> Iterator for Getopt<'_, I> {
    type Item = Result<Item<I>, ConfigError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some((idx, pos)) = self.cluster.take() {
            return Some(self.short_at(idx, pos));
        }
        loop {
            let idx = self.next;
            let word = self.take_next_arg()?;
            if self.only_positionals {
                return Some(Ok(Item::Positional(word)));
            }
            if word == "--" {
                self.only_positionals = true;
                continue;
            }
            if let Some(body) = word.strip_prefix("--") {
                return Some(self.long(body));
            }
            if word.len() > 1 && word.starts_with('-') {
                return Some(self.short_at(idx, 1));
            }
            return Some(Ok(Item::Positional(word)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum T {
        A,
        B,
        C,
        Same,
    }

    fn longs() -> Vec<LongOpt<T>> {
        let l = |name: &str, kind, id| LongOpt {
            name: name.to_owned(),
            kind,
            id,
        };
        vec![
            l("alpha", ArgKind::None, T::A),
            l("beta", ArgKind::Required, T::B),
            l("bet", ArgKind::None, T::C),
            l("gamma-one", ArgKind::Optional, T::Same),
            l("gamma-two", ArgKind::Optional, T::Same),
            l("delta-x", ArgKind::None, T::A),
            l("delta-y", ArgKind::None, T::C),
        ]
    }

    const SHORTS: &[ShortOpt<T>] = &[
        ShortOpt {
            ch: 'a',
            kind: ArgKind::None,
            id: T::A,
        },
        ShortOpt {
            ch: 'b',
            kind: ArgKind::Required,
            id: T::B,
        },
        ShortOpt {
            ch: 'c',
            kind: ArgKind::Optional,
            id: T::C,
        },
    ];

    fn run(args: &[&str]) -> Result<Vec<Item<T>>, ConfigError> {
        let longs = longs();
        Getopt::new(
            args.iter().map(|s| (*s).to_owned()).collect(),
            SHORTS,
            &longs,
        )
        .collect()
    }

    fn opt(id: T, arg: Option<&str>, spelled: &str) -> Item<T> {
        Item::Opt {
            id,
            arg: arg.map(str::to_owned),
            spelled: spelled.to_owned(),
        }
    }

    #[test]
    fn exact_long_name_beats_longer_prefix_match() {
        assert_eq!(run(&["--bet"]).unwrap(), vec![opt(T::C, None, "--bet")]);
        assert_eq!(
            run(&["--beta", "x"]).unwrap(),
            vec![opt(T::B, Some("x"), "--beta")]
        );
    }

    #[test]
    fn prefixes_with_the_same_action_are_not_ambiguous() {
        assert_eq!(
            run(&["--gamma=1"]).unwrap(),
            vec![opt(T::Same, Some("1"), "--gamma-one")]
        );
        match run(&["--delta"]) {
            Err(ConfigError::AmbiguousOption { candidates, .. }) => {
                assert_eq!(candidates, ["--delta-x", "--delta-y"]);
            }
            other => panic!("expected ambiguity, got {other:?}"),
        }
    }

    #[test]
    fn cluster_ends_with_required_argument_from_next_word() {
        assert_eq!(
            run(&["-aab", "-x", "p"]).unwrap(),
            vec![
                opt(T::A, None, "-a"),
                opt(T::A, None, "-a"),
                opt(T::B, Some("-x"), "-b"),
                Item::Positional("p".into())
            ]
        );
    }

    #[test]
    fn optional_argument_is_never_taken_from_the_next_word() {
        assert_eq!(
            run(&["-c", "4", "-c4", "--gamma-one", "5"]).unwrap(),
            vec![
                opt(T::C, None, "-c"),
                Item::Positional("4".into()),
                opt(T::C, Some("4"), "-c"),
                opt(T::Same, None, "--gamma-one"),
                Item::Positional("5".into()),
            ]
        );
    }

    #[test]
    fn double_dash_and_lone_dash_are_positionals_markers() {
        assert_eq!(
            run(&["-", "--", "-a", "--alpha"]).unwrap(),
            vec![
                Item::Positional("-".into()),
                Item::Positional("-a".into()),
                Item::Positional("--alpha".into())
            ]
        );
    }

    #[test]
    fn argument_errors_name_the_option() {
        assert!(
            matches!(run(&["-b"]), Err(ConfigError::MissingArgument { option }) if option == "-b")
        );
        assert!(
            matches!(run(&["--beta"]), Err(ConfigError::MissingArgument { option }) if option == "--beta")
        );
        assert!(
            matches!(run(&["--alpha=1"]), Err(ConfigError::UnexpectedArgument { option }) if option == "--alpha")
        );
        assert!(matches!(
            run(&["-z"]),
            Err(ConfigError::InvalidShortOption { option: 'z' })
        ));
        assert!(
            matches!(run(&["--zeta"]), Err(ConfigError::UnknownOption { option }) if option == "--zeta")
        );
        assert!(matches!(
            run(&["--=x"]),
            Err(ConfigError::UnknownOption { .. })
        ));
    }
}
