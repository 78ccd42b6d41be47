//! The offload folder under faults, run from outside against the real binary: loads killed
//! with SIGKILL mid-write and rerun, a byte flipped in what stowage wrote, three loads into one
//! folder at once, and a disk that fills up mid-write.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use burn_ndarray::{NdArray, NdArrayDevice};
use safetensors::Dtype;
use stowage::planner::{InventoryOptions, RuntimeOptions};
use stowage::{Budgets, Inventory, LoadOptions, PlanOptions};

use crate::fixtures::*;
use crate::load::{Valued, stowage_with_file_cap, values, write_valued};

const DATA: &str = "stowage-offload.safetensors";
const MANIFEST: &str = "stowage-offload.json";

/// `n` matrices of `side`×`side` values, in `dtype`, as `model.safetensors` in `dir`.
fn checkpoint(dir: &Path, n: usize, side: usize, dtype: Dtype) -> Vec<Valued> {
    let src: Vec<Valued> = (0..n)
        .map(|k| {
            let name = format!("model.layers.{k}.mlp.weight");
            (name, dtype, vec![side, side], values(k, side * side))
        })
        .collect();
    write_valued(&dir.join("model.safetensors"), &src);
    src
}

/// `stowage load` with every tensor converted to `dtype` and offloaded to `folder`, with
/// checksums of the values as loaded in its JSON report.
fn load_args<'a>(model: &'a Path, folder: &'a Path, dtype: &'a str) -> Vec<&'a str> {
    load_args_cpu(model, folder, dtype, "cpu=0")
}

/// [`load_args`] with a CPU budget (`cpu=SIZE`): what does not fit there is offloaded.
fn load_args_cpu<'a>(
    model: &'a Path,
    folder: &'a Path,
    dtype: &'a str,
    cpu: &'a str,
) -> Vec<&'a str> {
    vec![
        "load",
        s(model),
        "--dtype",
        dtype,
        "--max-memory",
        cpu,
        "--max-seq-len",
        "0",
        "--offload-folder",
        s(folder),
        "--checksums",
        "--json",
    ]
}

fn report(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "load failed: {}", stderr(out));
    serde_json::from_str(&stdout(out)).unwrap()
}

/// Each tensor's (sum, abs_sum, shape) from a load report.
fn sums(v: &serde_json::Value) -> BTreeMap<String, String> {
    let sums = v["checksums"].as_object().unwrap();
    sums.iter()
        .map(|(k, c)| {
            let c = format!("{} {} {}", c["sum"], c["abs_sum"], c["shape"]);
            (k.clone(), c)
        })
        .collect()
}

/// Bytes of every file in `folder`, and the names of its temp files.
fn folder_state(folder: &Path) -> (u64, Vec<String>) {
    let mut bytes = 0;
    let mut temps = Vec::new();
    for e in std::fs::read_dir(folder).into_iter().flatten().flatten() {
        bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(".tmp-") {
            temps.push(name);
        }
    }
    (bytes, temps)
}

/// The largest temp data file in `folder`.
fn temp_data_bytes(folder: &Path) -> u64 {
    std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{DATA}.tmp-"))
        })
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .max()
        .unwrap_or(0)
}

/// When to kill a load.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// As soon as its temp data file holds any bytes.
    FirstBytes,
    /// Once its temp data file holds this fraction of the clean data file.
    Written(f64),
    /// This long after it starts.
    After(Duration),
}

/// Starts `stowage` with `args` and kills it with SIGKILL at `at`; returns whether it was
/// still running when killed.
fn kill_load(args: &[&str], folder: &Path, clean_data: u64, at: KillAt) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("stowage starts");
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false; // finished before the kill point
        }
        let ready = match at {
            KillAt::FirstBytes => temp_data_bytes(folder) > 0,
            KillAt::Written(f) => temp_data_bytes(folder) as f64 >= f * clean_data as f64,
            KillAt::After(d) => started.elapsed() >= d,
        };
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{at:?} never came"
        );
        if ready {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A clean load's folder: its bytes, data file bytes, sums and data file contents.
struct Clean {
    bytes: u64,
    data: Vec<u8>,
    sums: BTreeMap<String, String>,
}

fn clean_load(model: &Path, folder: &Path, dtype: &str) -> Clean {
    clean_load_of(&load_args(model, folder, dtype), folder)
}

fn clean_load_of(args: &[&str], folder: &Path) -> Clean {
    let v = report(&stowage(args));
    assert_eq!(v["offload"]["reused"], false);
    let (bytes, temps) = folder_state(folder);
    assert!(temps.is_empty(), "{temps:?}");
    Clean {
        bytes,
        data: std::fs::read(folder.join(DATA)).unwrap(),
        sums: sums(&v),
    }
}

#[test]
fn killed_loads_leave_at_most_one_file_in_flight_and_the_rerun_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path(), 16, 1024, Dtype::F32); // 64 MiB of f32, 32 MiB offloaded as f16
    let clean = clean_load(dir.path(), &dir.path().join("clean"), "f16");
    let data_len = clean.data.len() as u64;

    let folder = dir.path().join("offload");
    let args = load_args(dir.path(), &folder, "f16");
    let points = [
        KillAt::FirstBytes,
        KillAt::Written(0.5),
        KillAt::Written(0.9),
        KillAt::After(Duration::from_millis(150)),
        KillAt::FirstBytes,
    ];
    let mut killed = 0;
    for (k, at) in points.into_iter().enumerate() {
        killed += usize::from(kill_load(&args, &folder, data_len, at));
        let (bytes, temps) = folder_state(&folder);
        // What a clean load writes, plus the one file the killed load had in flight.
        assert!(
            bytes <= clean.bytes + data_len && temps.len() <= 1,
            "after a kill at {at:?}: {bytes} bytes (clean: {}), temps {temps:?}",
            clean.bytes
        );
        if killed == k + 1 {
            assert!(
                !folder.join(MANIFEST).exists(),
                "no manifest vouches for a killed load's data"
            );
        }
    }
    assert!(killed >= 4, "the loads were killed mid-way ({killed} of 5)");

    // The rerun removes what the last kill left, writes the folder and loads the right values.
    let v = report(&stowage(&args));
    assert_eq!(v["offload"]["reused"], false);
    assert!(
        !v["offload"]["removed_leftovers"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(sums(&v), clean.sums);
    assert_eq!(folder_state(&folder), (clean.bytes, vec![]));
    assert_eq!(std::fs::read(folder.join(DATA)).unwrap(), clean.data);

    // Killed while rewriting a good folder for other tensors: the good one stays trusted.
    let bf16 = load_args(dir.path(), &folder, "bf16");
    assert!(kill_load(&bf16, &folder, data_len, KillAt::Written(0.5)));
    let v = report(&stowage(&args));
    assert_eq!(
        v["offload"]["reused"], true,
        "the f16 folder was left whole"
    );
    assert_eq!(v["offload"]["written_bytes"], 0);
    assert_eq!(sums(&v), clean.sums);
    assert_eq!(folder_state(&folder), (clean.bytes, vec![]));
}

#[test]
fn killed_between_data_and_manifest_nothing_stale_is_trusted() {
    // The state a kill between the two renames leaves: new data, the previous manifest.
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path(), 4, 64, Dtype::F32);
    let folder = dir.path().join("offload");
    let clean = clean_load(dir.path(), &folder, "f16");
    let f16_manifest = std::fs::read(folder.join(MANIFEST)).unwrap();
    report(&stowage(&load_args(dir.path(), &folder, "bf16")));
    std::fs::write(folder.join(MANIFEST), f16_manifest).unwrap();
    let v = report(&stowage(&load_args(dir.path(), &folder, "f16")));
    assert_eq!(
        v["offload"]["reused"], false,
        "bf16 data is not taken for f16"
    );
    assert_eq!(sums(&v), clean.sums);
    assert_eq!(std::fs::read(folder.join(DATA)).unwrap(), clean.data);
}

#[test]
fn three_loads_at_once_into_one_folder() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path(), 8, 512, Dtype::F32);
    let clean = clean_load(dir.path(), &dir.path().join("clean"), "f16");
    let folder = dir.path().join("offload");
    let args = load_args(dir.path(), &folder, "f16");
    let children: Vec<_> = (0..3)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_stowage"))
                .args(&args)
                .env("NO_COLOR", "1")
                .env_remove("RUST_LOG")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let v = report(&out);
        assert_eq!(sums(&v), clean.sums);
        assert!(v["offload"]["repaired"].as_array().unwrap().is_empty());
    }
    assert_eq!(folder_state(&folder), (clean.bytes, vec![]));
    assert_eq!(std::fs::read(folder.join(DATA)).unwrap(), clean.data);
}

/// Flips one bit of `path` at `at`, keeping its length and modification time.
fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], at).unwrap();
    f.set_modified(mtime).unwrap();
}

/// The tensor of the offload data file whose bytes hold `at`, and that tensor's middle byte.
fn tensor_at(data: &[u8], k: usize) -> (String, u64) {
    let st = safetensors::SafeTensors::deserialize(data).unwrap();
    let mut names = st.names();
    names.sort();
    let name = names[k].to_string();
    let view = st.tensor(&name).unwrap();
    let start = view.data().as_ptr() as usize - data.as_ptr() as usize;
    (name, (start + view.data().len() / 2) as u64)
}

#[test]
fn a_flipped_byte_in_the_offload_folder_is_caught_and_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path(), 6, 128, Dtype::F32);
    let folder = dir.path().join("offload");
    let clean = clean_load(dir.path(), &folder, "f16");
    let data_path = folder.join(DATA);
    let (name, at) = tensor_at(&clean.data, 3);
    flip_byte(&data_path, at);
    assert_eq!(
        std::fs::metadata(&data_path).unwrap().len(),
        clean.data.len() as u64
    );

    let out = stowage(&load_args(dir.path(), &folder, "f16"));
    let err = stderr(&out);
    let v = report(&out);
    assert!(
        err.contains(&format!("tensor `{name}` failed its checksum")) && err.contains("xxh3"),
        "stderr names the tensor: {err}"
    );
    assert_eq!(v["offload"]["reused"], true);
    assert_eq!(v["offload"]["repaired"], serde_json::json!([name]));
    assert_eq!(sums(&v), clean.sums, "the right values were served");
    assert_eq!(
        std::fs::read(&data_path).unwrap(),
        clean.data,
        "and rewritten"
    );

    // Once repaired, the next load finds nothing to say.
    let out = stowage(&load_args(dir.path(), &folder, "f16"));
    assert!(!stderr(&out).contains("checksum"), "{}", stderr(&out));
    assert_eq!(report(&out)["offload"]["written_bytes"], 0);
}

#[test]
fn verify_checks_offloaded_tensors_when_they_are_read() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path(), 4, 64, Dtype::F32);
    let inv = Inventory::from_spec(s(dir.path()), &InventoryOptions::default()).unwrap();
    let budgets = Budgets {
        gpus: vec![],
        cpu_bytes: 0,
        disk_bytes: 1 << 30,
    };
    let o = PlanOptions {
        dtype: Some(stowage::DType::F16),
        runtime: RuntimeOptions::off(),
        ..Default::default()
    };
    let plan = stowage::plan(&inv, &budgets, &o).unwrap();
    let folder = dir.path().join("offload");
    let load = |verify| {
        let opts = LoadOptions {
            offload_folder: folder.clone(),
            verify,
            ..Default::default()
        };
        stowage::load_store::<NdArray>(&inv, &plan, &NdArrayDevice::Cpu, &opts)
            .unwrap()
            .0
    };
    let plain = load(false);
    let verified = load(true);
    let data = std::fs::read(folder.join(DATA)).unwrap();
    let (name, at) = tensor_at(&data, 1);
    let before = plain.float::<2>(&name).unwrap().into_data();
    assert_eq!(verified.float::<2>(&name).unwrap().into_data(), before);

    // Changed after the loads checked the folder.
    flip_byte(&folder.join(DATA), at);
    let err = verified.float::<2>(&name).unwrap_err().to_string();
    assert!(
        err.contains(&format!("offloaded tensor `{name}` fails its checksum"))
            && err.contains(DATA),
        "{err}"
    );
    // Without verify the changed bytes are served, which is what verify is for.
    assert_ne!(plain.float::<2>(&name).unwrap().into_data(), before);
    let (other, _) = tensor_at(&data, 0);
    assert!(
        verified.float::<2>(&other).is_ok(),
        "other tensors still read"
    );
}

/// How the second load of [`full_disk_case`] is limited.
#[derive(Debug, Clone, Copy)]
struct Limit {
    /// Room on the filesystem the folder is on.
    folder_bytes: u64,
    /// The most bytes one file may take (`RLIMIT_FSIZE`).
    file_bytes: u64,
}

/// The full-disk case: a folder good for one load (half the tensors offloaded), then a load
/// that offloads all of them and runs out of room mid-write, then the first load again.
/// `limited` runs the three loads, the second limited by the [`Limit`], and
/// returns their exit codes, stdout and stderr.
#[allow(clippy::type_complexity)]
fn full_disk_case(
    folder_of: impl Fn(&Path) -> PathBuf,
    limited: impl Fn(&Path, &[Vec<String>], Limit) -> Vec<(i32, String, String)>,
) {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path(), 8, 512, Dtype::F32); // 1 MiB a tensor, 512 KiB as f16
    let half = "cpu=4MiB";
    let clean_half = clean_load_of(
        &load_args_cpu(dir.path(), &dir.path().join("a"), "f16", half),
        &dir.path().join("a"),
    );
    let clean_all = clean_load(dir.path(), &dir.path().join("b"), "f16");
    assert!(
        clean_half.bytes < clean_all.bytes * 3 / 4,
        "half went to the CPU"
    );
    let folder = folder_of(dir.path());
    let own = |a: Vec<&str>| a.into_iter().map(String::from).collect::<Vec<_>>();
    let first = own(load_args_cpu(dir.path(), &folder, "f16", half));
    let all = own(load_args(dir.path(), &folder, "f16"));
    // The first folder fits; a data file for all of them beside it does not.
    let limit = Limit {
        folder_bytes: clean_half.bytes + clean_all.data.len() as u64 / 2,
        file_bytes: clean_all.data.len() as u64 * 3 / 4,
    };
    let outs = limited(dir.path(), &[first.clone(), all, first], limit);

    let (rc, out, err) = &outs[0];
    assert_eq!(*rc, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out).unwrap();
    assert_eq!(sums(&v), clean_half.sums);

    let (rc, _, err) = &outs[1];
    assert_eq!(*rc, 1, "the second load fails: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains(&format!("offload folder `{}`", folder.display()))
            && err.contains("cannot write tensor `model.layers.")
            && (err.contains("No space left") || err.contains("File too large")),
        "the error names the tensor and the folder: {err}"
    );

    let (rc, out, err) = &outs[2];
    assert_eq!(*rc, 0, "{err}");
    let again: serde_json::Value = serde_json::from_str(out).unwrap();
    assert_eq!(again["offload"]["reused"], true, "the good folder was kept");
    assert_eq!(again["offload"]["written_bytes"], 0);
    assert_eq!(sums(&again), clean_half.sums);
}

#[test]
fn a_file_size_limit_mid_write_keeps_the_good_folder() {
    full_disk_case(
        |dir| dir.join("offload"),
        |_, runs, limit| {
            runs.iter()
                .enumerate()
                .map(|(k, args)| {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    // Only the second load is limited: no file of its may pass the limit.
                    let o = if k == 1 {
                        stowage_with_file_cap(&args, limit.file_bytes)
                    } else {
                        stowage(&args)
                    };
                    (o.status.code().unwrap_or(-1), stdout(&o), stderr(&o))
                })
                .collect()
        },
    );
}

/// Whether this machine lets an unprivileged process mount a tmpfs in its own namespace.
fn can_mount_tmpfs() -> bool {
    Command::new("unshare")
        .args([
            "-rm",
            "sh",
            "-c",
            "mount -t tmpfs -o size=64k tmpfs /tmp 2>/dev/null",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_full_tmpfs_mid_write_keeps_the_good_folder() {
    if !can_mount_tmpfs() {
        // No namespaces here (some CI sandboxes): the same case, with the file size limit.
        eprintln!("no user namespaces: the full-disk case runs with a file size limit instead");
        return a_file_size_limit_mid_write_keeps_the_good_folder();
    }
    full_disk_case(
        |dir| dir.join("small-disk").join("offload"),
        |dir, runs, limit| {
            // All three loads run inside one private mount namespace, on a tmpfs of
            // `limit.folder_bytes` mounted there (nothing is mounted outside it); their outputs go to `dir`.
            let mnt = dir.join("small-disk");
            std::fs::create_dir_all(&mnt).unwrap();
            let mut script = format!(
                "mount -t tmpfs -o size={} tmpfs '{}' || exit 99\n",
                limit.folder_bytes,
                s(&mnt)
            );
            for (k, args) in runs.iter().enumerate() {
                let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
                script += &format!(
                    "'{}' {} >'{d}/{k}.out' 2>'{d}/{k}.err'; echo $? >'{d}/{k}.rc'\n",
                    env!("CARGO_BIN_EXE_stowage"),
                    quoted.join(" "),
                    d = s(dir),
                );
            }
            let st = Command::new("unshare")
                .args(["-rm", "sh", "-c", &script])
                .env("NO_COLOR", "1")
                .env_remove("RUST_LOG")
                .status()
                .unwrap();
            assert!(st.success(), "the namespace ran: {st}");
            (0..runs.len())
                .map(|k| {
                    let read =
                        |ext| std::fs::read_to_string(dir.join(format!("{k}.{ext}"))).unwrap();
                    (read("rc").trim().parse().unwrap(), read("out"), read("err"))
                })
                .collect()
        },
    );
}
