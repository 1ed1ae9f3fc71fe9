//! The fuzz target: random scripts of the same actions, a bounded number of cases per
//! `cargo test`, and a failing script shrunk to a minimal one.
//!
//! cargo-fuzz needs a nightly compiler; this project builds on stable, so the
//! generation and shrinking come from proptest. The case count is small by default so
//! that `cargo test` stays fast, and the seed is fixed, so that every run replays the same
//! scripts; `PROPTEST_CASES=N` runs longer (e.g. 100000 overnight), and
//! `PROPTEST_RNG_SEED=random` (or a number) draws other scripts.

use proptest::prelude::*;
use proptest::strategy::{Strategy, Union};
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

use preload_kit::{Heap, MIN_ALIGN};

use crate::{Action, Failure, Profile, Replay};

/// The seed of `cargo test`'s fuzzing, unless `PROPTEST_RNG_SEED` is set.
const FIXED_SEED: u64 = 0x6d79_6d61_6c6c_6f63;

/// The longest script a case draws: long enough to build up a heap of a few hundred
/// blocks, short enough that shrinking is quick.
const MAX_SCRIPT: usize = 400;

fn sizes(profile: &Profile) -> impl Strategy<Value = usize> + Clone + use<> {
    Union::new_weighted(
        profile
            .sizes
            .iter()
            .map(|&(weight, largest)| (weight, (0..=largest).boxed()))
            .collect(),
    )
}

fn actions(profile: &Profile) -> impl Strategy<Value = Action> + use<> {
    let steps = (profile.max_align / MIN_ALIGN).trailing_zeros();
    // Shrinking moves towards the first branch: `Alloc`, the simplest action.
    prop_oneof![
        profile.alloc => sizes(profile).prop_map(|size| Action::Alloc { size }),
        profile.alloc_zeroed => sizes(profile).prop_map(|size| Action::AllocZeroed { size }),
        profile.memalign => (sizes(profile), 0..=steps).prop_map(|(size, shift)| Action::Memalign {
            size,
            align: MIN_ALIGN << shift,
        }),
        profile.free => (0..MAX_SCRIPT).prop_map(|slot| Action::Free { slot }),
        profile.realloc => (0..MAX_SCRIPT, sizes(profile))
            .prop_map(|(slot, size)| Action::Realloc { slot, size }),
    ]
}

/// The strategy behind [`fuzz`]: scripts of up to 400 actions drawn from `profile`.
pub fn scripts(profile: &Profile) -> impl Strategy<Value = Vec<Action>> + use<> {
    proptest::collection::vec(actions(profile), 0..MAX_SCRIPT)
}

/// Replays `cases` random scripts (or `PROPTEST_CASES`), each on a fresh heap from
/// `new_heap`, freeing everything at the end; panics with the shrunk script when one
/// fails. The heap check runs after every action, so a failure is caught where it
/// happens.
pub fn fuzz<H: Heap>(new_heap: impl Fn() -> H, profile: &Profile, cases: u32) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    // A fixed seed unless PROPTEST_RNG_SEED says otherwise: `cargo test` replays the
    // same scripts on every run (a failure in CI repeats on a laptop); a long run picks
    // its own seed to explore further (PROPTEST_RNG_SEED=random, or a number).
    let rng_seed = match std::env::var("PROPTEST_RNG_SEED").as_deref() {
        Ok("random") => RngSeed::Random,
        Ok(number) => number
            .parse()
            .map_or(RngSeed::Fixed(FIXED_SEED), RngSeed::Fixed),
        Err(_) => RngSeed::Fixed(FIXED_SEED),
    };
    let config = Config {
        cases,
        rng_seed,
        // A failing script is printed for a regression test, not kept in a file.
        failure_persistence: None,
        // proptest's automatic limit (4 per case) stops long before a script of
        // hundreds of actions is down to its core; a replay is cheap.
        max_shrink_iters: 20_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let replay = |script: &[Action]| {
        let mut replay = Replay::new(new_heap());
        replay.run(script).and_then(|()| replay.free_all())
    };
    let result = runner.run(&scripts(profile), |script| {
        replay(&script).map_err(|failure| TestCaseError::fail(failure.to_string()))
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(_, script)) => {
            let script = minimise(script, |script| replay(script).err());
            let failure = replay(&script).expect_err("the minimal script fails");
            panic!(
                "{} failed a replay: {failure}\nminimal script ({} actions; `use heap_replay::Action::*;`):\n{script:?}",
                H::NAME,
                script.len()
            )
        }
        Err(TestError::Abort(why)) => panic!("{} fuzzing stopped: {why}", H::NAME),
    }
}

/// Makes a failing script smaller than proptest's shrinking leaves it. proptest
/// deletes actions one at a time, and deleting an `Alloc` shifts the slots of every
/// later action, so the `Free` or `Realloc` that showed the fault now touches another
/// block and the script passes. Here a deletion removes a block's whole story: the
/// action that made it, every later action on it, and the slots of the others are
/// renumbered to name the same blocks as before. Runs of actions are deleted, halves
/// first, then smaller runs down to single actions, until no deletion keeps the
/// script failing; the actions after the failing one are cut (they never ran).
/// Replays are deterministic, so a script that failed fails again.
fn minimise(script: Vec<Action>, fails: impl Fn(&[Action]) -> Option<Failure>) -> Vec<Action> {
    let mut script = renumber(&script, &[]);
    loop {
        let Some(failure) = fails(&script) else {
            return script;
        };
        if let Some(index) = failure.index {
            script.truncate(index + 1);
        }
        let mut shorter = None;
        let mut run = script.len().div_ceil(2);
        'runs: while run > 0 {
            for start in (0..script.len()).step_by(run) {
                let gone: Vec<usize> = (start..(start + run).min(script.len())).collect();
                let candidate = renumber(&script, &gone);
                if candidate.len() < script.len() && fails(&candidate).is_some() {
                    shorter = Some(candidate);
                    break 'runs;
                }
            }
            run /= 2;
        }
        match shorter {
            Some(candidate) => script = candidate,
            None => return script,
        }
    }
}

/// `script` without the actions at the indices in `gone` (sorted), nor any action on a
/// block that one of them made; every other action touches the same block as before,
/// its slot now the block's exact place in the live list. Actions on a block when none
/// was live did nothing and are dropped too.
fn renumber(script: &[Action], gone: &[usize]) -> Vec<Action> {
    // Blocks are named by the index of the action that made them.
    let mut before: Vec<usize> = Vec::new();
    let mut after: Vec<usize> = Vec::new();
    let mut kept = Vec::with_capacity(script.len());
    for (index, &action) in script.iter().enumerate() {
        let deleted = gone.binary_search(&index).is_ok();
        let slot = match action {
            Action::Alloc { .. } | Action::AllocZeroed { .. } | Action::Memalign { .. } => {
                before.push(index);
                if !deleted {
                    after.push(index);
                    kept.push(action);
                }
                continue;
            }
            Action::Free { slot } | Action::Realloc { slot, .. } => slot,
        };
        if before.is_empty() {
            continue;
        }
        let position = slot % before.len();
        let block = before[position];
        if matches!(action, Action::Free { .. }) {
            before.remove(position);
        }
        let Some(new_position) = after.iter().position(|&b| b == block) else {
            continue;
        };
        if deleted {
            // The block stays (its maker is kept); a deleted free leaves it live.
            continue;
        }
        kept.push(match action {
            Action::Free { .. } => {
                after.remove(new_position);
                Action::Free { slot: new_position }
            }
            Action::Realloc { size, .. } => Action::Realloc {
                slot: new_position,
                size,
            },
            other => other,
        });
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::renumber;
    use crate::Action::*;

    #[test]
    fn deleting_a_block_s_maker_deletes_its_story_and_renumbers_the_rest() {
        let script = [
            Alloc { size: 1 },
            Alloc { size: 2 },
            Alloc { size: 3 },
            Realloc { slot: 3, size: 9 }, // 3 % 3: the block of size 1
            Free { slot: 4 },             // 4 % 3: the block of size 2
            Free { slot: 7 },             // 7 % 2: the block of size 3
        ];
        assert_eq!(
            renumber(&script, &[]),
            [
                Alloc { size: 1 },
                Alloc { size: 2 },
                Alloc { size: 3 },
                Realloc { slot: 0, size: 9 },
                Free { slot: 1 },
                Free { slot: 1 },
            ]
        );
        assert_eq!(
            renumber(&script, &[1]),
            [
                Alloc { size: 1 },
                Alloc { size: 3 },
                Realloc { slot: 0, size: 9 },
                Free { slot: 1 },
            ]
        );
        // A deleted free leaves its block live; actions with nothing live go.
        assert_eq!(
            renumber(
                &[Free { slot: 0 }, Alloc { size: 1 }, Free { slot: 0 }],
                &[2]
            ),
            [Alloc { size: 1 }]
        );
    }
}
