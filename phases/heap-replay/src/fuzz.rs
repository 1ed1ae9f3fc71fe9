//! The fuzz target: random scripts of the same actions, a bounded number of cases per
//! `cargo test`, and a failing script shrunk to a minimal one.
//!
//! cargo-fuzz needs a nightly compiler; this project builds on stable, so the
//! generation and shrinking come from proptest. The case count is small by default so
//! that `cargo test` stays fast; `PROPTEST_CASES=N` runs longer (e.g. 100000 overnight).

use proptest::prelude::*;
use proptest::strategy::{Strategy, Union};
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use preload_kit::{Heap, MIN_ALIGN};

use crate::{Action, Failure, Profile, Replay};

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
    let config = Config {
        cases,
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

/// Makes a failing script smaller than proptest's shrinking leaves it: proptest deletes
/// actions in one pass, before it simplifies them, and a simpler action often makes
/// an earlier one unneeded. Here actions after the failing one are cut (they never
/// ran), then single actions are deleted while the script still fails, until none can
/// be. Replays are deterministic, so a script that failed fails again.
fn minimise(mut script: Vec<Action>, fails: impl Fn(&[Action]) -> Option<Failure>) -> Vec<Action> {
    loop {
        let Some(failure) = fails(&script) else {
            return script;
        };
        if let Some(index) = failure.index {
            script.truncate(index + 1);
        }
        let shorter = (0..script.len()).find_map(|skip| {
            let mut candidate = script.clone();
            candidate.remove(skip);
            fails(&candidate).is_some().then_some(candidate)
        });
        match shorter {
            Some(candidate) => script = candidate,
            None => return script,
        }
    }
}
