//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) and regression inputs
//! (`fuzz/regressions/<target>/`) through the same harness functions the `cargo fuzz`
//! targets call, so what fuzzing found keeps being checked on stable by `cargo test`.
//!
//! `write_seeds` (ignored) writes the harness's seed inputs into the corpus directories:
//! `cargo test -p warren-protocol --test fuzz_corpus -- --ignored write_seeds`.

use std::fs;
use std::path::{Path, PathBuf};

use warren_protocol::fuzz_harness::{seeds, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none if it does not exist.
fn inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|e| e.expect("readable corpus entry").path()).filter(|p| p.is_file()).collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), fs::read(&p).expect("readable corpus file"))).collect()
}

#[test]
fn committed_corpora_replay() {
    for (name, harness) in TARGETS {
        let corpus = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "no committed corpus for fuzz target {name}");
        let mut accepted = 0;
        for (path, data) in &corpus {
            eprintln!("{name}: {}", path.display());
            accepted += usize::from(harness(data) > 0);
        }
        // A corpus that never gets past the first check has stopped covering anything.
        assert!(accepted > 0, "no input of the {name} corpus is accepted");
    }
}

#[test]
fn regression_inputs_replay() {
    for (name, harness) in TARGETS {
        for (path, data) in inputs(&fuzz_dir().join("regressions").join(name)) {
            eprintln!("{name}: {}", path.display());
            harness(&data);
        }
    }
}

#[test]
#[ignore = "writes the seed inputs into fuzz/corpus; run by hand"]
fn write_seeds() {
    for (name, _) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        fs::create_dir_all(&dir).expect("corpus directory");
        for (i, seed) in seeds(name).iter().enumerate() {
            fs::write(dir.join(format!("seed-{i:02}")), seed).expect("seed written");
        }
    }
}
