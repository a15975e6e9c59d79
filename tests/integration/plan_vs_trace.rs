//! What `--dry-run` says flakem will run against what it runs: for each command, the plan
//! (stdout of the dry run: `+ ...` and `# ...` lines, `# [host]` sections with several hosts)
//! and the trace of the same command run for real on the test bed (stderr: `+ ...` lines,
//! `[host] `-prefixed with several hosts) must list the same processes in the same order.
//!
//! How the two are compared:
//! - Each side is cut into streams: the lines before any host (a plan's lines before its
//!   first `# [host]`, the trace's unprefixed lines) and one stream per host. With one host
//!   there are no sections and no prefixes: one stream.
//! - Each `+ ` line is split into shell words. A word of the plan may hold placeholders for
//!   values known only at run time (`<tmp>`, `<drv>`, `<system>`, `<boot-id>`, ...: `<`, a
//!   lowercase name, `>`); each matches any non-empty text of the traced word. A placeholder
//!   quoted inside a word (`'<system>'` in a remote script) matches the same unquoted: the
//!   quotes are there only for the placeholder's `<` and `>`.
//! - Every other line, child output, the stand-in's own `$ ` lines and flakem's messages,
//!   is not a process flakem started and is left out on both sides.
//!
//! `# ` lines stand for no process, except these, which are matched as said:
//! - `# dialect: ... (assumed; ...)`: the dialect probe (`+ ... nixos-rebuild --no-reexec
//!   --flakem-probe build`) that only a real run does; it may appear once at the head of the
//!   trace, or not at all (the answer is cached per nixos-rebuild after the first run).
//!   With a dialect that is `(given)`, or no dialect line, no probe may appear.
//! - `# ssh: no host has a ControlPath of its own (assumed; ...)`: each host's `ssh -G`,
//!   which only a real run does, at the head of the trace after the names evaluation: one
//!   per host of the plan. Without that line, none may appear there.
//! - `# check: `T` is in <flake>#nixosConfigurations (... one nix eval)`: the names
//!   evaluation (`+ nix ... eval ... builtins.attrNames ...`) that only a real run does; one
//!   such line per host in the plan, exactly one evaluation at the head of the trace. Without
//!   such a line, no names evaluation may appear.
//! - `# after a try that answers with <boot-id>:`, and every `# if ...:` (`# if that
//!   fails:`, the guard's `# if that fails: wait until ...`): the `+ ` line after them runs
//!   only when that happens; it may appear any number of times, or not at all.
//! - `# if ..., with these steps:` to `# (end of the steps ...)`: every `+ ` line between
//!   them runs only when that happens (a reset's boot back into what the host ran).
//! - `# on any way out, each control master still open is closed:`: the `+ ` lines after it
//!   (to the end of the stream) close masters only if still open: the trace may end with any
//!   of them, each at most once.
//!
//! Any other difference is a mismatch: the test lists all of them, for every command, and
//! fails. Nothing is ignored beyond the rules above.

use std::fmt::Write;
use std::time::Duration;

use crate::e2e::{deployed_generation, run};
use crate::testbed::{Reboot, TestBed};

/// A `+ ` line: as printed (for the report) and as words (to compare).
#[derive(Clone, Debug)]
struct Command {
    line: String,
    words: Vec<String>,
}

/// One line of a plan that stands for traced processes.
#[derive(Clone, Debug)]
enum Expect {
    /// A process that must run once, here.
    Once(Command),
    /// A process that runs only on some condition, any number of times, here.
    Maybe(Command),
    /// The closing of control masters still open, at the end: any of these commands.
    Finally(Vec<Command>),
}

/// One stream of a dry run: what the lines promise.
#[derive(Debug, Default)]
struct PlanStream {
    expect: Vec<Expect>,
}

/// A dry run's plan, cut into streams.
#[derive(Debug, Default)]
struct ParsedPlan {
    /// `None` for the lines before any host.
    streams: Vec<(Option<String>, PlanStream)>,
    /// The dialect is assumed, so a real run may probe.
    probe_allowed: bool,
    /// Some `# check: ... is in ...` line: a real run reads the names.
    names_evaluated: bool,
    /// `# ssh: no host has a ControlPath of its own (assumed; ...)`: a real run reads each
    /// host's `ssh -G`.
    ssh_config_read: bool,
}

fn words(line: &str) -> Vec<String> {
    shell_words::split(line).unwrap_or_else(|e| panic!("not shell words ({e}): {line}"))
}

/// A plan's `+ ` line as words, with the quotes around placeholders inside a word dropped.
fn plan_words(line: &str) -> Vec<String> {
    words(line)
        .into_iter()
        .map(|word| {
            let mut word = word;
            while let Some((start, end)) = quoted_placeholder(&word) {
                word.replace_range(end - 1..end, "");
                word.replace_range(start..start + 1, "");
            }
            word
        })
        .collect()
}

/// The byte range of the first `'<name>'` in `word`.
fn quoted_placeholder(word: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(i) = word[from..].find("'<").map(|i| i + from) {
        if let Some(len) = placeholder_at(&word[i + 1..])
            && word[i + 1 + len..].starts_with('\'')
        {
            return Some((i, i + len + 2));
        }
        from = i + 1;
    }
    None
}

/// The length of the placeholder `<name>` at the start of `s`, if there is one.
fn placeholder_at(s: &str) -> Option<usize> {
    let rest = s.strip_prefix('<')?;
    let end = rest.find('>')?;
    let name = &rest[..end];
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c == '-');
    ok.then_some(end + 2)
}

/// Whether the traced word `word` is the plan's word `pattern`, each placeholder standing for
/// any non-empty text.
fn word_matches(pattern: &str, word: &str) -> bool {
    if pattern.is_empty() {
        return word.is_empty();
    }
    if let Some(len) = placeholder_at(pattern) {
        let rest = &pattern[len..];
        return word
            .char_indices()
            .skip(1)
            .map(|(i, _)| i)
            .chain(std::iter::once(word.len()).filter(|&n| n > 0))
            .any(|i| word_matches(rest, &word[i..]));
    }
    let c = pattern.chars().next().unwrap();
    word.starts_with(c) && word_matches(&pattern[c.len_utf8()..], &word[c.len_utf8()..])
}

/// Whether a traced command is the plan's command: word by word, placeholders aside.
fn command_matches(pattern: &[String], traced: &[String]) -> bool {
    pattern.len() == traced.len() && pattern.iter().zip(traced).all(|(p, t)| word_matches(p, t))
}

fn parse_plan(stdout: &str) -> ParsedPlan {
    let mut plan = ParsedPlan {
        streams: vec![(None, PlanStream::default())],
        ..ParsedPlan::default()
    };
    let (mut conditional, mut block) = (false, false);
    for line in stdout.lines() {
        let stream = &mut plan.streams.last_mut().unwrap().1;
        if let Some(command) = line.strip_prefix("+ ") {
            let command = Command {
                line: line.to_owned(),
                words: plan_words(command),
            };
            match (stream.expect.last_mut(), std::mem::take(&mut conditional)) {
                (Some(Expect::Finally(closes)), _) => closes.push(command),
                (_, true) => stream.expect.push(Expect::Maybe(command)),
                _ if block => stream.expect.push(Expect::Maybe(command)),
                (_, false) => stream.expect.push(Expect::Once(command)),
            }
        } else if let Some(host) = line.strip_prefix("# [").and_then(|l| l.strip_suffix(']')) {
            plan.streams
                .push((Some(host.to_owned()), PlanStream::default()));
        } else if let Some(dialect) = line.strip_prefix("# dialect: ") {
            plan.probe_allowed = dialect.contains("(assumed");
        } else if line.starts_with("# ssh: no host has a ControlPath of its own") {
            plan.ssh_config_read = true;
        } else if line.starts_with("# check: `") && line.contains("` is in ") {
            plan.names_evaluated = true;
        } else if line.starts_with("# if ") && line.ends_with(", with these steps:") {
            block = true;
        } else if line.starts_with("# (end of the steps ") {
            block = false;
        } else if line == "# after a try that answers with <boot-id>:"
            || (line.starts_with("# if ") && line.ends_with(':'))
        {
            conditional = true;
        } else if line == "# on any way out, each control master still open is closed:" {
            stream.expect.push(Expect::Finally(Vec::new()));
        } else {
            assert!(
                line.starts_with("# ") || line.is_empty(),
                "a plan line that is neither `+ ` nor `# `: {line}"
            );
        }
    }
    plan
}

/// The `+ ` lines of a real run (without their `[host] `), by stream (`None`: unprefixed).
fn parse_trace(stderr: &str) -> Vec<(Option<String>, String)> {
    stderr
        .lines()
        .filter_map(|line| {
            let (host, rest) = match line.strip_prefix('[').and_then(|l| l.split_once("] ")) {
                Some((host, rest)) => (Some(host.to_owned()), rest),
                None => (None, line),
            };
            rest.starts_with("+ ").then(|| (host, rest.to_owned()))
        })
        .collect()
}

fn is_probe(c: &Command) -> bool {
    c.words.iter().any(|w| w == "--flakem-probe")
}

fn is_ssh_config(c: &Command) -> bool {
    c.words.first().is_some_and(|w| w == "ssh") && c.words.iter().any(|w| w == "-G")
}

fn is_names_evaluation(c: &Command) -> bool {
    c.words.iter().any(|w| w == "eval") && c.words.iter().any(|w| w.contains("builtins.attrNames"))
}

/// Whether the plan line `expect` accounts for the traced command `traced`.
fn accounts_for(expect: &Expect, traced: &Command) -> bool {
    match expect {
        Expect::Once(c) | Expect::Maybe(c) => command_matches(&c.words, &traced.words),
        Expect::Finally(cs) => cs.iter().any(|c| command_matches(&c.words, &traced.words)),
    }
}

/// A line left over by [`align`]: the index of a plan line, or of a traced command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Left {
    Plan(usize),
    Trace(usize),
}

/// The cheapest alignment of a plan stream with a traced stream: the plan's lines no traced
/// command matched, and the traced commands no plan line accounts for, in order.
fn align(expect: &[Expect], traced: &[Command]) -> Vec<Left> {
    let (n, m) = (expect.len(), traced.len());
    // cost[i][j]: the fewest unmatched lines aligning expect[i..] with traced[j..].
    let mut cost = vec![vec![usize::MAX; m + 1]; n + 1];
    for i in (0..=n).rev() {
        for j in (0..=m).rev() {
            cost[i][j] = if i == n {
                m - j
            } else {
                let skip_plan = cost[i + 1][j]
                    + match expect[i] {
                        Expect::Once(_) => 1,
                        Expect::Maybe(_) | Expect::Finally(_) => 0,
                    };
                let skip_trace = if j < m {
                    cost[i][j + 1] + 1
                } else {
                    usize::MAX
                };
                let matched = match &expect[i] {
                    _ if j == m || !accounts_for(&expect[i], &traced[j]) => usize::MAX,
                    Expect::Once(_) => cost[i + 1][j + 1],
                    Expect::Maybe(_) | Expect::Finally(_) => cost[i][j + 1],
                };
                skip_plan.min(skip_trace).min(matched)
            };
        }
    }
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i == n {
            out.push(Left::Trace(j));
            j += 1;
            continue;
        }
        let here = cost[i][j];
        let matched = j < m
            && accounts_for(&expect[i], &traced[j])
            && match expect[i] {
                Expect::Once(_) => cost[i + 1][j + 1] == here,
                _ => cost[i][j + 1] == here,
            };
        if matched {
            match expect[i] {
                Expect::Once(_) => (i, j) = (i + 1, j + 1),
                _ => j += 1,
            }
            continue;
        }
        let optional = !matches!(expect[i], Expect::Once(_));
        if cost[i + 1][j] + usize::from(!optional) == here {
            if let Expect::Once(_) = &expect[i] {
                out.push(Left::Plan(i));
            }
            i += 1;
        } else {
            out.push(Left::Trace(j));
            j += 1;
        }
    }
    out
}

/// Every difference between a dry run's plan and the trace of the real run, one line each.
pub fn mismatches(plan_stdout: &str, trace_stderr: &str) -> Vec<String> {
    let plan = parse_plan(plan_stdout);
    let mut traced: Vec<(Option<String>, Vec<Command>)> = Vec::new();
    for (host, line) in parse_trace(trace_stderr) {
        let command = Command {
            words: words(line.strip_prefix("+ ").unwrap_or(&line)),
            line,
        };
        match traced.iter_mut().find(|(h, _)| *h == host) {
            Some((_, list)) => list.push(command),
            None => traced.push((host, vec![command])),
        }
    }
    let mut found = Vec::new();
    // The probe and the names evaluation: at the head of the unprefixed stream, as the plan's
    // `# ` lines allow.
    if let Some((_, head)) = traced.iter_mut().find(|(h, _)| h.is_none()) {
        let read = head
            .iter()
            .take_while(|w| is_probe(w) || is_names_evaluation(w))
            .count();
        let probes = head[..read].iter().filter(|w| is_probe(w)).count();
        let names = read - probes;
        // Then each host's ssh configuration, where the plan says a real run reads it.
        let hosts = plan
            .streams
            .iter()
            .filter(|(h, _)| h.is_some())
            .count()
            .max(1);
        let wanted = if plan.ssh_config_read { hosts } else { 0 };
        let configs = head[read..]
            .iter()
            .take(wanted)
            .take_while(|w| is_ssh_config(w))
            .count();
        if configs != wanted {
            found.push(format!(
                "the trace reads {configs} host(s)' ssh configuration; the plan says {wanted}"
            ));
        }
        let before_plan = read + configs;
        if probes > usize::from(plan.probe_allowed) {
            found.push(format!(
                "the trace probes the dialect {probes} time(s); the plan allows {}",
                usize::from(plan.probe_allowed)
            ));
        }
        if names != usize::from(plan.names_evaluated) {
            found.push(format!(
                "the trace evaluates the names {names} time(s) before the plan's steps; the \
                 plan says {}",
                usize::from(plan.names_evaluated)
            ));
        }
        head.drain(..before_plan);
    } else if plan.names_evaluated {
        found.push("the plan says the names are evaluated; the trace does not".into());
    }
    for (host, stream) in &plan.streams {
        let empty = Vec::new();
        let traced_here = traced
            .iter()
            .find(|(h, _)| h == host)
            .map_or(&empty, |(_, t)| t);
        let name = host.as_deref().unwrap_or("-");
        let left = align(&stream.expect, traced_here);
        // A line on both sides, in other places: one mismatch, the order.
        let moved = |p: usize| {
            left.iter().find_map(|l| match *l {
                Left::Trace(t) if accounts_for(&stream.expect[p], &traced_here[t]) => Some(t),
                _ => None,
            })
        };
        let moves: Vec<usize> = left
            .iter()
            .filter_map(|l| match *l {
                Left::Plan(p) => moved(p),
                Left::Trace(_) => None,
            })
            .collect();
        for l in &left {
            let line = match *l {
                Left::Plan(p) => match (&stream.expect[p], moved(p)) {
                    (Expect::Once(c), Some(t)) => format!(
                        "in another order: the plan's command {} is the trace's command {}: {}",
                        p + 1,
                        t + 1,
                        c.line
                    ),
                    (Expect::Once(c), None) => format!("only in the plan: {}", c.line),
                    _ => continue,
                },
                Left::Trace(t) if moves.contains(&t) => continue,
                Left::Trace(t) => format!("only in the trace: {}", traced_here[t].line),
            };
            found.push(format!("[{name}] {line}"));
        }
    }
    for (host, commands) in &traced {
        if !commands.is_empty() && !plan.streams.iter().any(|(h, _)| h == host) {
            found.push(format!(
                "the trace has commands for {host:?}, the plan no section for it"
            ));
        }
    }
    found
}

/// The plan of a run that stops after its `# if ..., with these steps:` block ran (a reset
/// that booted the host back ends there, exit 6): without the lines after the block that
/// never run, up to the closing of the masters.
fn stopped_after_block(plan: &str) -> String {
    let mut skipping = false;
    let mut kept = String::new();
    for line in plan.lines() {
        if line.starts_with("# on any way out") {
            skipping = false;
        }
        if !skipping {
            kept.push_str(line);
            kept.push('\n');
        }
        skipping |= line.starts_with("# (end of the steps ");
    }
    kept
}

/// Dry run, then the real thing, for each command on one bed; every mismatch of every
/// command is listed before the test fails.
#[test]
fn the_dry_run_lists_what_runs() {
    let mut bed = TestBed::with_hosts(&["web1", "web2", "b"]);
    bed.host("web1")
        .set_reboot(Reboot::Down(Duration::from_millis(300)));
    // Each command, and the status it ends with.
    let cases: &[(&[&str], i32)] = &[
        (&["switch-push", "web1"], 0),
        (&["switch-pull", "web1"], 0),
        (&["switch-push-reset", "web1"], 0),
        (&["switch-push-reset", "--health-check", "true", "web1"], 0),
        // The new boot is not confirmed: the host boots back into what it ran.
        (&["switch-push-reset", "--health-check", "false", "web1"], 6),
        (&["build-there", "web1"], 0),
        (&["switch-push", "--build-host", "b", "web1"], 0),
        (&["switch-push", "web1,web2"], 0),
        (&["switch-push", "--diff", "web1"], 0),
        (&["ssh-wait", "web1"], 0),
        (&["ssh-wait", "web1", "uname", "-a"], 0),
        (&["generations", "web1"], 0),
        (&["rollback", "--rollback-timeout", "3s", "web1"], 0),
        (&["gc", "--keep", "2", "web1,web2"], 0),
    ];
    let mut report = String::new();
    for (i, (args, status)) in cases.iter().enumerate() {
        // Something new to deploy each time.
        deployed_generation(&mut bed, "web1", &format!("p{i}"));
        let dry = run(&bed, &[&["--dry-run"], *args].concat());
        dry.status(0);
        assert_eq!(dry.stderr, "", "{args:?}: a dry run starts nothing");
        let real = run(&bed, args);
        real.status(*status);
        let plan = match status {
            0 => dry.stdout.clone(),
            _ => stopped_after_block(&dry.stdout),
        };
        let found = mismatches(&plan, &real.stderr);
        if !found.is_empty() {
            writeln!(
                report,
                "\n=== {}\n{}\n--- plan:\n{}--- trace:\n{}",
                args.join(" "),
                found.join("\n"),
                dry.stdout,
                real.stderr
            )
            .ok();
        }
    }
    assert!(report.is_empty(), "the plan and the trace differ:{report}");
}

#[test]
fn placeholders_match_any_text_in_a_word() {
    assert!(word_matches("<drv>", "/nix/store/abc-x.drv"));
    assert!(word_matches(
        "ControlPath=<tmp>/0/before",
        "ControlPath=/tmp/flakem-x1/0/before"
    ));
    assert!(word_matches("<a>-<b>", "x-y-z"));
    assert!(!word_matches(
        "ControlPath=<tmp>/0/before",
        "ControlPath=/tmp/x/1/before"
    ));
    assert!(
        !word_matches("<drv>", ""),
        "a placeholder stands for something"
    );
    assert!(!word_matches("--flake", "--flake=x"));
    assert!(word_matches("--flake", "--flake"));
    // Not placeholders: compared as they are.
    assert!(word_matches("a<B>c", "a<B>c"));
    assert!(!word_matches("a<B>c", "aXc"));
    assert!(word_matches("2>/dev/null", "2>/dev/null"));

    assert_eq!(
        plan_words("ssh -- h 'diff /run/current-system '\\''<system>'\\''; true'"),
        ["ssh", "--", "h", "diff /run/current-system <system>; true"]
    );
    let plan = plan_words("nix-store --realise '<drv>'");
    assert!(command_matches(
        &plan,
        &words("nix-store --realise /nix/store/a.drv")
    ));
    assert!(!command_matches(
        &plan,
        &words("nix-store --realise /nix/store/a.drv --dry-run")
    ));
}

#[test]
fn the_comparison_reports_what_differs() {
    let plan = "# dialect: ng (assumed; ...)\n\
                # check: `h` is in .#nixosConfigurations (one nix eval)\n\
                + ssh -o 'ControlPath=<tmp>/0/before' -- h true\n\
                + wait '<boot-id>'\n\
                # after a try that answers with <boot-id>:\n\
                + ssh -o 'ControlPath=<tmp>/0/after' -O exit -- h\n\
                + ssh -o 'ControlPath=<tmp>/0/after' -O exit -- h\n\
                # on any way out, each control master still open is closed:\n\
                + ssh -o 'ControlPath=<tmp>/0/after' -O exit -- h\n";
    let good = "+ nix eval --expr 'builtins.attrNames f'\n\
                + MANPAGER=cat nixos-rebuild --no-reexec --flakem-probe build\n\
                + ssh -o ControlPath=/t/x/0/before -- h true\n\
                child output\n\
                + wait 1234\n\
                + ssh -o ControlPath=/t/x/0/after -O exit -- h\n\
                + ssh -o ControlPath=/t/x/0/after -O exit -- h\n\
                + ssh -o ControlPath=/t/x/0/after -O exit -- h\n";
    assert_eq!(mismatches(plan, good), Vec::<String>::new());
    let bad = "+ ssh -o ControlPath=/t/x/0/before -- h true\n\
               + wait 1234\n\
               + ssh -o ControlPath=/t/x/0/before -O exit -- h\n";
    assert_eq!(
        mismatches(plan, bad),
        [
            "the trace evaluates the names 0 time(s) before the plan's steps; the plan says 1",
            "[-] only in the plan: + ssh -o 'ControlPath=<tmp>/0/after' -O exit -- h",
            "[-] only in the trace: + ssh -o ControlPath=/t/x/0/before -O exit -- h",
        ]
    );
    // The same command elsewhere is one mismatch, wherever either side has it.
    for trace in ["+ b\n+ c\n+ a\n", "+ c\n+ a\n+ b\n"] {
        assert_eq!(
            mismatches("+ a\n+ b\n+ c\n", trace).len(),
            1,
            "{trace}: {:?}",
            mismatches("+ a\n+ b\n+ c\n", trace)
        );
    }
    assert_eq!(
        mismatches("+ a\n+ b\n", "+ b\n+ a\n"),
        ["[-] in another order: the plan's command 1 is the trace's command 2: + a"]
    );
    let fleet_plan = "# [a]\n+ x <tmp>\n# [b]\n+ y\n";
    assert_eq!(
        mismatches(fleet_plan, "[b] + y\n[a] + x 1\n"),
        Vec::<String>::new()
    );
    assert_eq!(
        mismatches(fleet_plan, "[b] + y\n[c] + z\n"),
        [
            "[a] only in the plan: + x <tmp>",
            "the trace has commands for Some(\"c\"), the plan no section for it",
        ]
    );
}
