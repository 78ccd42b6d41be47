//! The table and the JSON of `stowage plan`, pinned for fixed configs and budgets (no measured
//! figure and no temp path enters them). Review changes with `cargo insta review`.

use crate::fixtures::*;

const ARGS: &[&str] = &[
    "plan",
    "builtin:llama-3-8b",
    "--gpus",
    "2x6GiB",
    "--max-memory",
    "cpu=8GiB",
    "--max-memory",
    "disk=100GiB",
];

#[test]
fn table_balanced_with_explanation() {
    let out = stowage(&[ARGS, &["--explain"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_snapshot!(stdout(&out));
}

#[test]
fn table_optimal_experts_first() {
    let out = stowage(&[
        "plan",
        "builtin:mixtral-8x7b",
        "--gpus",
        "2x24GiB",
        "--max-memory",
        "cpu=64GiB",
        "--max-memory",
        "disk=1TiB",
        "--strategy",
        "optimal",
        "--offload-order",
        "experts-first",
        "--explain",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_snapshot!(stdout(&out));
}

#[test]
fn json_sequential() {
    let out = stowage(&[ARGS, &["--strategy", "sequential", "--json"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    insta::assert_json_snapshot!(v);
}

#[test]
fn diff_table() {
    let out = stowage(&[ARGS, &["--diff", "--gpus 3x6GiB --max-seq-len 8192"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_snapshot!(stdout(&out));
}
