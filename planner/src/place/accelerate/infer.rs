//! transformers' `infer_auto_device_map` (its copy of Accelerate's), step by step, and
//! Accelerate's `clean_device_map`.
//!
//! A list of entries to treat starts as the root's parameters then its children. Each entry
//! popped from the front goes to the current device if it fits, together with the modules
//! holding the parameters tied to it. A "main device" (the first GPU, and cpu) only offers
//! its budget minus the largest layer still to treat (a module with no children, or a
//! no-split block), whether or not anything ends up offloaded. An entry that does not fit is
//! split into its direct parameters and children; a leaf or a no-split block that does not
//! fit moves the fill to the next device for good. When only the tied modules make it too
//! big, the first splittable tied module is split instead. Disk takes everything, whatever
//! its budget.

use std::collections::VecDeque;

use super::tree::{Node, Tree};
use crate::device::Device;

/// What the fill decided.
#[derive(Debug)]
pub(super) struct Inferred<'a> {
    /// Every entry placed, in the order it was placed (before `clean_device_map`).
    pub placed: Vec<(&'a Node, Device)>,
    /// The largest-layer reserve last applied on each main device the fill reached.
    pub reserves: Vec<(Device, u64)>,
}

/// `name + "." in k + "."`: transformers tests ties by substring, not by prefix.
fn inside(name: &str, key: &str) -> bool {
    format!("{key}.").contains(&format!("{name}."))
}

/// `get_max_layer_size`: the size of the largest layer among `entries` (a layer is an entry
/// without children, or a no-split block) and the names of the layers of that size.
fn max_layer<'a>(entries: impl Iterator<Item = &'a Node>) -> (u64, Vec<&'a str>) {
    let mut queue: VecDeque<&Node> = entries.collect();
    let (mut max, mut names) = (0u64, Vec::new());
    while let Some(node) = queue.pop_front() {
        if node.is_module() && !node.children.is_empty() && !node.no_split {
            for c in node.children.iter().rev() {
                queue.push_front(c);
            }
            continue;
        }
        if node.bytes > max {
            max = node.bytes;
            names = vec![node.path.as_str()];
        } else if node.bytes == max {
            names.push(node.path.as_str());
        }
    }
    (max, names)
}

fn modules_only<'a, 'b>(todo: &'b VecDeque<&'a Node>) -> impl Iterator<Item = &'a Node> + 'b {
    todo.iter().copied().filter(|n| n.is_module())
}

/// Runs the fill over `devices` (budgets in placement order; disk last).
pub(super) fn infer<'a>(tree: &'a Tree, devices: &[(Device, u64)]) -> Inferred<'a> {
    let first_gpu = devices.iter().map(|e| e.0).find(|d| d.is_gpu());
    let main = [first_gpu, Some(Device::Cpu)];
    let mut todo: VecDeque<&Node> = tree.root.params.iter().chain(&tree.root.children).collect();
    let mut used = vec![0i128; devices.len()];
    let mut current = 0usize;
    let mut placed = Vec::new();
    let mut reserves: Vec<(Device, u64)> = Vec::new();
    let (mut max_size, mut max_names) = max_layer(todo.iter().copied());

    while let Some(node) = todo.pop_front() {
        let name = node.path.as_str();
        let below = format!("{name}.");
        max_names.retain(|n| *n != name && !n.starts_with(&below));
        if max_names.is_empty() {
            (max_size, max_names) = max_layer(modules_only(&todo));
        }

        // Tied parameters outside this entry whose group reaches into it.
        let tied_params: Vec<&str> = tree
            .ties
            .iter()
            .filter(|g| g.iter().any(|k| inside(name, k)) && !g.iter().all(|k| inside(name, k)))
            .flat_map(|g| g.iter().filter(|p| !inside(name, p)).map(String::as_str))
            .collect();
        let mut tied_modules: Vec<&Node> = Vec::new();
        let mut with_ties = i128::from(node.bytes);
        for p in &tied_params {
            let holder = todo.iter().find(|n| p.starts_with(&format!("{}.", n.path)));
            if let Some(&m) = holder
                && !tied_modules.iter().any(|t| t.path == m.path)
            {
                tied_modules.push(m);
                with_ties += i128::from(m.bytes);
            }
        }

        let Some(&(device, budget)) = devices.get(current) else {
            // Unreachable: disk, last, takes everything.
            break;
        };
        let mut room = (device != Device::Disk).then_some(i128::from(budget));
        let mut reserve = 0i128;
        if main.contains(&Some(device)) {
            room = room.map(|r| r - i128::from(max_size));
            reserve = i128::from(max_size);
            match reserves.iter_mut().find(|e| e.0 == device) {
                Some(e) => e.1 = max_size,
                None => reserves.push((device, max_size)),
            }
        }

        if room.is_none_or(|r| used[current] + with_ties <= r) {
            used[current] += with_ties;
            placed.push((node, device));
            for m in tied_modules {
                if let Some(pos) = todo.iter().position(|n| n.path == m.path) {
                    todo.remove(pos);
                }
                placed.push((m, device));
            }
            continue;
        }

        // Without its tied modules it would fit: split the first tied module that can be.
        if !tied_params.is_empty()
            && room.is_some_and(|r| used[current] + i128::from(node.bytes) <= r)
        {
            let splittable = tied_modules
                .iter()
                .find(|m| !m.children.is_empty() && !m.no_split);
            if let Some(m) = splittable
                && let Some(pos) = todo.iter().position(|n| n.path == m.path)
            {
                todo.remove(pos);
                for (k, part) in m.params.iter().chain(&m.children).enumerate() {
                    todo.insert(pos + k, part);
                }
                todo.push_front(node);
                (max_size, max_names) = max_layer(modules_only(&todo));
                continue;
            }
        }

        if node.is_module() && !node.children.is_empty() && !node.no_split {
            for part in node.params.iter().chain(&node.children).rev() {
                todo.push_front(part);
            }
            (max_size, max_names) = max_layer(modules_only(&todo));
            continue;
        }

        // A leaf or a no-split block that does not fit: on to the next device, for good.
        used[current] += reserve;
        current += 1;
        todo.push_front(node);
    }
    Inferred { placed, reserves }
}

/// Accelerate's `clean_device_map`: where every key under a module prefix has one device, and
/// there are at least two such keys, they become one key for the module. Keys keep their
/// first-seen order (Python's follows a `set`, so it is not reproducible anyway).
pub(super) fn clean(map: &mut Vec<(String, Device)>, module: &str) {
    let prefix = if module.is_empty() {
        String::new()
    } else {
        format!("{module}.")
    };
    let values: Vec<Device> = map
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|e| e.1)
        .collect();
    if values.len() > 1 && values.iter().all(|v| *v == values[0]) {
        map.retain(|(k, _)| !k.starts_with(&prefix));
        map.push((module.to_string(), values[0]));
    }
    let depth = if module.is_empty() {
        1
    } else {
        module.split('.').count() + 1
    };
    let mut children: Vec<String> = Vec::new();
    for (k, _) in map.iter() {
        if k.starts_with(&prefix) && k.len() > module.len() {
            let c = k.split('.').take(depth).collect::<Vec<_>>().join(".");
            if !children.contains(&c) {
                children.push(c);
            }
        }
    }
    for c in children {
        clean(map, &c);
    }
}
