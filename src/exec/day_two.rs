//! The run of the day-two steps (`day_two::Act`): what they learn of the host's generations
//! and what they decide with it, each decision the verdicts' (`generations.rs`).

use crate::console::Stream;
use crate::day_two::Act;
use crate::error::Error;
use crate::generations::{self, Listing};
use crate::process;

use super::Executor;

/// What the day-two steps of one host learnt.
#[derive(Default)]
pub(super) struct Learnt {
    /// The generations as last read.
    pub listing: Option<Listing>,
    /// `<generation>`: the number of the generation a rollback switches to.
    pub generation: Option<String>,
    /// `<generations>`: the numbers a garbage collection deletes, one word.
    pub doomed: Option<String>,
    pub deleted: Vec<u32>,
    /// What nix-collect-garbage said it freed.
    pub freed: Option<String>,
}

impl Executor<'_> {
    pub(super) fn day_two(&mut self, act: &Act) -> Result<(), Error> {
        let console = self.console;
        match act {
            Act::Read { host, cmd } => {
                let listing = generations::parse(host, &self.read(cmd)?)?;
                self.learnt.day_two.listing = Some(listing);
            }
            Act::Show { .. } => console.lines(Stream::Out, &self.listing()?.table()),
            Act::Choose { host, to } => {
                let chosen = self.listing()?.rollback_target(host, *to)?.clone();
                console.say(&format!(
                    "{host}: switching to generation {} ({})",
                    chosen.number, chosen.path
                ));
                self.learnt.day_two.generation = Some(chosen.number.to_string());
                self.learnt.system = Some(chosen.path);
            }
            Act::Select { keep, .. } => {
                let doomed = self.listing()?.to_delete(*keep);
                let words: Vec<String> = doomed.iter().map(u32::to_string).collect();
                self.learnt.day_two.doomed = Some(words.join(" "));
                self.learnt.day_two.deleted = doomed;
            }
            Act::Run(cmd) => {
                console.trace(cmd);
                let end = self.streamed(cmd)?;
                process::check(cmd, end)?;
            }
            Act::Collect(cmd) => {
                let text = self.captured(cmd)?;
                console.pass(Stream::Out, text.as_bytes());
                self.learnt.day_two.freed = generations::freed(&text);
            }
            Act::Arm { host, cmd, .. } => self.arm(host, cmd)?,
            Act::Verify { host, cmd } => {
                let want = self.learnt.system.clone().unwrap_or_default();
                generations::running(host, &self.read(cmd)?, &want)?;
            }
            Act::Remain { host } => {
                let learnt = &self.learnt.day_two;
                let freed = learnt.freed.as_deref();
                let line = self.listing()?.remain(&learnt.deleted, freed);
                console.say(&format!("{host}: {line}"));
            }
        }
        Ok(())
    }

    fn listing(&self) -> Result<&Listing, Error> {
        self.learnt
            .day_two
            .listing
            .as_ref()
            .ok_or_else(|| Error::Check("the generations were not read".into()))
    }

    /// The generations as last read, for the summary.
    pub fn generations(&self) -> Option<&Listing> {
        self.learnt.day_two.listing.as_ref()
    }
}
