use super::*;

fn host() -> Host {
    Host::parse("web1").unwrap()
}

const ONE: &str = "/nix/store/3khjl0gdp1i48qhicp42i4xrl1mm39g7-nixos-system-web1-gen-one";
const TWO: &str = "/nix/store/9gqfdb0m86xc6cr5wp29x44xp91aa43m-nixos-system-web1-gen-two";
const THREE: &str = "/nix/store/m6x8kbka0w1cnjw68r6mrfrvwcjwcx3c-nixos-system-web1-gen-three";

/// `day_two::READ` on a test host that booted generation 2 and then switched to 3.
const READ: &str = "\
generation 1 1796134458 /nix/store/3khjl0gdp1i48qhicp42i4xrl1mm39g7-nixos-system-web1-gen-one flakem-test-one
generation 2 1796134459 /nix/store/9gqfdb0m86xc6cr5wp29x44xp91aa43m-nixos-system-web1-gen-two flakem-test-two
generation 3 1796134460 /nix/store/m6x8kbka0w1cnjw68r6mrfrvwcjwcx3c-nixos-system-web1-gen-three flakem-test-three
profile system-3-link
running /nix/store/m6x8kbka0w1cnjw68r6mrfrvwcjwcx3c-nixos-system-web1-gen-three
booted /nix/store/9gqfdb0m86xc6cr5wp29x44xp91aa43m-nixos-system-web1-gen-two
now 1796134460
";

fn listing(text: &str) -> Listing {
    parse(&host(), text).unwrap()
}

/// A listing of generations `1..=n` made `days_ago` days before `now`, each its own system
/// `/nix/store/N`, with the running, booted and profile's ones as given.
fn made(ages: &[i64], running: u32, booted: u32, profile: u32) -> Listing {
    let now = 1_800_000_000;
    let mut text = String::new();
    for (i, days) in ages.iter().enumerate() {
        let created = now - days * 86_400;
        text += &format!("generation {} {created} /nix/store/{} \n", i + 1, i + 1);
    }
    text += &format!(
        "profile system-{profile}-link\nrunning /nix/store/{running}\nbooted \
         /nix/store/{booted}\nnow {now}\n"
    );
    listing(&text)
}

#[test]
fn a_real_read_is_three_generations_running_booted_and_the_profiles() {
    let l = listing(READ);
    assert_eq!(l.generations.len(), 3);
    let g = &l.generations[0];
    assert_eq!((g.number, g.path.as_str()), (1, ONE));
    assert_eq!(g.nixos_version.as_deref(), Some("flakem-test-one"));
    assert_eq!(g.created, 1796134458);
    assert_eq!(g.date, "2026-12-01T14:14:18Z");
    assert!(!g.running && !g.booted && !g.profile);
    let two = &l.generations[1];
    assert!(two.booted && !two.running && !two.profile);
    let three = &l.generations[2];
    assert!(three.running && three.profile && !three.booted);
    assert_eq!(l.running.as_deref(), Some(THREE));
    assert_eq!(l.now, 1796134460);
    assert_eq!(
        l.rollback_target(&host(), None).unwrap().path,
        TWO,
        "the previous one"
    );
}

#[test]
fn dates_are_utc() {
    assert_eq!(utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(utc(1_709_251_199), "2024-02-29T23:59:59Z");
    assert_eq!(utc(4_102_444_800), "2100-01-01T00:00:00Z");
}

#[test]
fn a_host_with_nothing_yet() {
    let l = listing("profile \nrunning \nbooted \nnow 5\n");
    assert!(l.generations.is_empty());
    assert_eq!(l.running, None);
    assert!(l.table().contains("(no system generations)"));
    let e = l.rollback_target(&host(), None).unwrap_err();
    assert_eq!(e.status(), 2);
    assert!(e.to_string().ends_with("it has none"), "{e}");
    assert_eq!(l.to_delete(Keep::Newest(0)), Vec::<u32>::new());
}

#[test]
fn what_cannot_be_read_says_so() {
    for bad in [
        "generation x 1 /nix/store/a\nnow 1\n",
        "generation 1 1 relative\nnow 1\n",
        "something else\nnow 1\n",
        "generation 1 1 /nix/store/a\n",
    ] {
        let e = parse(&host(), bad).unwrap_err();
        assert_eq!(e.status(), 5, "{bad}");
        assert!(
            e.to_string()
                .starts_with("cannot read the generations of web1"),
            "{e}"
        );
    }
}

#[test]
fn a_rollback_to_n_must_name_one_there_is() {
    let l = listing(READ);
    assert_eq!(l.rollback_target(&host(), Some(1)).unwrap().path, ONE);
    let e = l.rollback_target(&host(), Some(9)).unwrap_err();
    assert_eq!(e.status(), 2);
    assert_eq!(
        e.to_string(),
        "web1 has no system generation 9; it has 1, 2 (booted), 3 (running, profile)"
    );
}

#[test]
fn the_previous_generation_is_before_the_running_one_and_another_system() {
    // Generations 1..=4, running 3 (rolled back to it before): the previous is 2.
    let l = made(&[4, 3, 2, 1], 3, 3, 3);
    assert_eq!(l.rollback_target(&host(), None).unwrap().number, 2);
    // The oldest runs: there is none before it.
    let l = made(&[2, 1], 1, 1, 1);
    let e = l.rollback_target(&host(), None).unwrap_err();
    assert!(
        e.to_string()
            .contains("no system generation to roll back to"),
        "{e}"
    );
    // The same system twice: the previous is another system.
    let text = "generation 1 1 /nix/store/a\ngeneration 2 2 /nix/store/b\n\
                generation 3 3 /nix/store/a\nprofile system-3-link\nrunning /nix/store/a\n\
                booted /nix/store/a\nnow 4\n";
    let l = listing(text);
    assert_eq!(l.rollback_target(&host(), None).unwrap().number, 2);
    assert!(
        l.generations[2].running && !l.generations[0].running,
        "the profile's one"
    );
}

#[test]
fn a_system_no_generation_holds_rolls_back_to_the_profiles() {
    // `switch-push test` of a system never set in the profile.
    let text = "generation 1 1 /nix/store/a\ngeneration 2 2 /nix/store/b\n\
                profile system-2-link\nrunning /nix/store/tested\nbooted /nix/store/b\nnow 4\n";
    let l = listing(text);
    assert_eq!(l.rollback_target(&host(), None).unwrap().number, 2);
    assert!(
        l.table()
            .contains("running: /nix/store/tested (no generation holds it)")
    );
}

#[test]
fn gc_keeps_the_newest_and_the_running_booted_and_profiles() {
    // Six generations, booted 2, running and profile 3: keep 5, 6 and those.
    let l = made(&[6, 5, 4, 3, 2, 1], 3, 2, 3);
    assert_eq!(l.to_delete(Keep::Newest(2)), [1, 4]);
    assert_eq!(l.to_delete(Keep::Newest(0)), [1, 4, 5, 6]);
    assert_eq!(l.to_delete(Keep::Newest(5)), [1]);
    assert_eq!(l.to_delete(Keep::Newest(6)), Vec::<u32>::new());
    // A profile that waits for the next boot is never deleted either.
    let l = made(&[3, 2, 1], 1, 1, 3);
    assert_eq!(l.to_delete(Keep::Newest(0)), [2]);
}

#[test]
fn gc_by_age_keeps_those_newer() {
    let l = made(&[40, 20, 10, 1], 4, 4, 4);
    assert_eq!(l.to_delete(Keep::NewerThan(GcAge(15))), [1, 2]);
    assert_eq!(l.to_delete(Keep::NewerThan(GcAge(30))), [1]);
    assert_eq!(l.to_delete(Keep::NewerThan(GcAge(0))), [1, 2, 3]);
}

#[test]
fn the_table_and_the_report() {
    let table = listing(READ).table();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("GENERATION  DATE (UTC)"), "{table}");
    assert!(
        lines[2].contains("2026-12-01 14:14:19  flakem-test-two"),
        "{table}"
    );
    assert!(lines[2].contains("booted "), "{table}");
    assert!(
        lines[3].contains("running, profile") && lines[3].ends_with(THREE),
        "{table}"
    );
    let freed = freed("deleting garbage...\n3 store paths deleted, 0.07 MiB freed\n");
    assert_eq!(
        freed.as_deref(),
        Some("3 store paths deleted, 0.07 MiB freed")
    );
    assert_eq!(
        listing(READ).remain(&[4, 5], freed.as_deref()),
        "deleted generations 4, 5; 3 generations remain: 1, 2 (booted), 3 (running, \
         profile); 3 store paths deleted, 0.07 MiB freed"
    );
    assert_eq!(
        made(&[1], 1, 1, 1).remain(&[], None),
        "deleted no generation; 1 generation remain: 1 (running, booted, profile)"
    );
}

#[test]
fn after_a_rollback_the_host_runs_what_was_asked() {
    assert!(running(&host(), &format!("{TWO}\n"), TWO).is_ok());
    let e = running(&host(), THREE, TWO).unwrap_err();
    assert_eq!(e.status(), 4);
    assert_eq!(
        e.to_string(),
        format!("web1 runs {THREE}, not the generation's system {TWO}")
    );
}
