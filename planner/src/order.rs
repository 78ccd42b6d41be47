//! Execution order of a model's modules, recovered from tensor names alone.
//!
//! Safetensors headers list tensors by offset, which writers sort by dtype and name, so
//! `layers.10` comes before `layers.2` and `lm_head` before `model`. Stowage orders each
//! level of the module tree by what the name says about when the module runs: embeddings
//! first, then numbered blocks in numeric order, then final norms, then heads. Names it has
//! no rule for keep the order in which they first appear.
//!
//! [`module_tree`] builds the ordered tree in two passes over the names, each name split once:
//! the first links every tensor under its module (nodes are byte ranges of the names, kept in
//! flat vectors, and consecutive names share the lookups of their common path), the second
//! walks that tree in order and makes the [`Module`]s. For Kimi K2's 1.4e5 tensors and 9.5e4
//! modules the only allocations per module or tensor are the ones the result holds.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::error::Result;
use crate::inventory::{BLOCK_CONTAINERS, Module, check_unique, duplicate};
use crate::pattern::Pattern;
use crate::tensor::TensorInfo;

/// A sort key for one path segment; lower runs earlier. Digits sort numerically among
/// themselves, after names of the same rank.
pub(crate) fn segment_rank(segment: &str) -> (u32, u64) {
    if let Ok(n) = segment.parse::<u64>() {
        return (50, n);
    }
    let lower;
    let s: &str = if segment.bytes().any(|b| b.is_ascii_uppercase()) {
        lower = segment.to_ascii_lowercase();
        &lower
    } else {
        segment
    };
    let rank = match s {
        "wte" | "shared" | "tok_embeddings" | "emb" | "embed" | "word_embeddings"
        | "embed_tokens" | "embed_in" => 0,
        "wpe" | "embed_positions" | "position_embeddings" => 1,
        "token_type_embeddings" => 2,
        // `windows` rather than `contains`: segments are short, and a substring searcher
        // costs more to set up than this scan (it ran for almost every segment).
        _ if s.starts_with("embed") || s.as_bytes().windows(9).any(|w| w == b"embedding") => 3,
        "project_in" | "layernorm_embedding" | "emb_ln" | "ln_emb" => 10,
        "input_layernorm"
        | "ln_1"
        | "self_attn_layer_norm"
        | "attention_norm"
        | "norm1"
        | "pre_attention_layernorm" => 20,
        "q_proj" | "q" | "query" | "q_a_proj" | "q_a_layernorm" | "q_b_proj" => 31,
        "k_proj" | "k" | "key" | "kv_a_proj_with_mqa" | "kv_a_layernorm" | "kv_b_proj" => 32,
        "v_proj" | "v" | "value" => 33,
        "o_proj" | "o" | "out_proj" | "c_proj" | "dense" => 36,
        "c_attn" => 30,
        "self_attn" | "attn" | "attention" | "selfattention" | "self_attention" | "mixer" => 30,
        "encoder" => 40,
        "post_attention_layernorm"
        | "ln_2"
        | "ffn_norm"
        | "norm2"
        | "pre_feedforward_layernorm" => 55,
        "gate" | "router" => 56,
        "mlp" | "feed_forward" | "block_sparse_moe" | "ffn" | "intermediate" | "densereludense" => {
            60
        }
        "gate_proj" | "w1" | "c_fc" | "fc1" | "wi" | "wi_0" | "wi_1" | "up_proj" | "w3" => 61,
        "down_proj" | "w2" | "fc2" | "wo" => 63,
        "decoder" => 60,
        "output" => 65,
        "post_feedforward_layernorm" => 70,
        "norm" | "ln_f" | "final_layer_norm" | "final_layernorm" | "norm_f" | "final_norm" => 80,
        "project_out" => 90,
        "lm_head" | "head" | "classifier" | "score" | "cls" | "pooler" | "qa_outputs"
        | "embed_out" | "output_layer" => 100,
        "bias" => 52,
        _ => 50,
    };
    (rank, 0)
}

/// [`segment_rank`] with its last few answers remembered: the same few names (`weight`,
/// `bias`, `gate_proj`, …) recur through every block of a model, and matching one against
/// every rule costs more than comparing it with a few remembered ones.
pub(crate) struct Ranks<'a> {
    recent: [(&'a str, (u32, u64)); 8],
    next: usize,
}

impl<'a> Ranks<'a> {
    pub(crate) fn new() -> Self {
        Ranks {
            recent: [("", segment_rank("")); 8],
            next: 0,
        }
    }

    /// The rank of `segment`, as [`segment_rank`] gives it.
    pub(crate) fn of(&mut self, segment: &'a str) -> (u32, u64) {
        // Block and expert numbers differ from one another; parsing them is quick.
        if segment.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            return segment_rank(segment);
        }
        if let Some(&(_, rank)) = self.recent.iter().find(|(s, _)| *s == segment) {
            return rank;
        }
        let rank = segment_rank(segment);
        self.recent[self.next] = (segment, rank);
        self.next = (self.next + 1) % self.recent.len();
        rank
    }
}

/// The ordered module tree over `tensors` (see the module doc), its no-split units marked,
/// and the tensor indices in depth-first order (`order[new] == old`). Duplicate names are
/// [`crate::Error::DuplicateTensor`].
pub(crate) fn module_tree(
    tensors: &[TensorInfo],
    patterns: &[Pattern],
    default_no_split: bool,
) -> Result<(Module, Vec<u32>)> {
    let tree = Tree::build(tensors)?;
    let mut o = Ordering {
        tree: &tree,
        patterns,
        default_no_split,
        order: Vec::with_capacity(tensors.len()),
        ranks: Ranks::new(),
        leaves: Vec::new(),
        children: Vec::new(),
    };
    let root = o.module(0, Place::ROOT, false);
    Ok((root, o.order))
}

/// Puts `tensors` in `order` (`order[new] == old`) in place, by following its cycles.
pub(crate) fn permute<T>(tensors: &mut [T], mut order: Vec<u32>) {
    const DONE: u32 = u32::MAX;
    for i in 0..order.len() {
        let mut at = i;
        while order[at] != DONE {
            let from = std::mem::replace(&mut order[at], DONE) as usize;
            if from == i {
                break;
            }
            tensors.swap(at, from);
            at = from;
        }
    }
}

/// Splits a tensor name at its last dot: (module path, leaf); (`""`, the name) without a dot.
fn split_leaf(name: &str) -> (&str, &str) {
    // Leaves are short (`weight`): a scan from the end finds the dot sooner than `memrchr`
    // sets itself up.
    match name.bytes().rposition(|b| b == b'.') {
        Some(dot) => (&name[..dot], &name[dot + 1..]),
        None => ("", name),
    }
}

/// The leaf of a tensor directly under the module whose path ends at byte `end` of the
/// tensor names: what follows that end and its dot. At the root (`end` is `None`) the name
/// may still hold a dot (`.x` is `x` at the root), so it is split.
fn leaf_after(name: &str, end: Option<usize>) -> &str {
    match end {
        Some(end) => &name[end + 1..],
        None => split_leaf(name).1,
    }
}

/// No link (an index into [`Tree::nodes`] or into the tensors).
const NONE: u32 = u32::MAX;

/// The module tree over a tensor list, before ordering: children and tensors are linked
/// lists, most recent first, in flat vectors.
struct Tree<'n> {
    tensors: &'n [TensorInfo],
    /// Node 0 is the root; a node's index grows with its first appearance.
    nodes: Vec<Node>,
    /// (parent, segment) → child, for a parent with many children (models have hundreds of
    /// experts per layer) once a look-up needs it; smaller ones are searched along their list.
    index: HashMap<(u32, &'n str), u32, BuildHasherDefault<FxHasher>>,
    /// The tensor listed before this one directly under the same module, by tensor index.
    prev_tensor: Vec<u32>,
}

/// A module. Its path ends at byte `end` of the name of tensor `name`, the first to reach
/// it; where the path and the last segment start follows from the parent (see [`Place`]).
struct Node {
    name: u32,
    end: u32,
    last_child: u32,
    prev_sibling: u32,
    children: u32,
    last_tensor: u32,
    tensors: u32,
    /// The largest [`number`] of a child segment, [`NONE`] if none has one: a segment with a
    /// larger one is a new child, known without a look-up, as blocks and experts are when
    /// listed in order.
    max_number: u32,
    /// Whether its children are in [`Tree::index`].
    indexed: bool,
}

impl Node {
    fn new(name: u32, end: u32, prev_sibling: u32) -> Node {
        Node {
            name,
            end,
            last_child: NONE,
            prev_sibling,
            children: 0,
            last_tensor: NONE,
            tensors: 0,
            max_number: NONE,
            indexed: false,
        }
    }
}

/// `segment` as a number, when it is all digits (and fits). Equal segments have equal numbers,
/// so one larger than every numbered child's is a new child.
fn number(segment: &str) -> Option<u32> {
    let b = segment.as_bytes();
    let digits = matches!(b.len(), 1..=9) && b.iter().all(u8::is_ascii_digit);
    digits.then(|| segment.parse().expect("at most 9 digits"))
}

/// Children a module has before they are looked up by hash rather than along the list.
const INDEX_FROM: u32 = 16;

/// Tensors directly under a module up to which duplicates are caught there, by comparing
/// leaf names; a module with more is checked by hashing every name afterwards instead.
const CHECK_LEAVES_UP_TO: u32 = 32;

impl<'n> Tree<'n> {
    /// Places every tensor under its module, in list order. Duplicate names are errors.
    fn build(tensors: &'n [TensorInfo]) -> Result<Tree<'n>> {
        // Node fields are u32: 4 G tensors would take 500 GB, a 4 GiB name is no name.
        let fits = |n: usize| n < NONE as usize;
        assert!(
            fits(tensors.len()) && tensors.iter().all(|t| fits(t.name.len())),
            "more than 4 G tensors, or a tensor name over 4 GiB"
        );
        let mut tree = Tree {
            tensors,
            nodes: Vec::with_capacity(tensors.len().min(1 << 20) + 1),
            index: HashMap::default(),
            prev_tensor: vec![NONE; tensors.len()],
        };
        tree.nodes.push(Node::new(0, 0, NONE));
        // The module path of the previous tensor, and its nodes with the end of each one's
        // path: consecutive tensors mostly share their module, or all of it but the last
        // segments, so only the segments that differ are looked up.
        let mut prev: &str = "";
        let mut trail: Vec<(u32, usize)> = Vec::new();
        let mut crowded = false;
        for (i, t) in tensors.iter().enumerate() {
            let (module, leaf) = split_leaf(&t.name);
            // A node of the previous path is one of this path when the paths agree up to its
            // end and this path's segment ends there too. (Tensors at the root have no nodes
            // on their path; a path may start with an empty segment, which ends at 0.)
            let common = common_prefix(module, prev);
            let kept = if module.is_empty() {
                0
            } else {
                trail
                    .iter()
                    .take_while(|&&(_, end)| {
                        end <= common && (end == module.len() || module.as_bytes()[end] == b'.')
                    })
                    .count()
            };
            trail.truncate(kept);
            let mut node = trail.last().map_or(0, |&(n, _)| n);
            if !module.is_empty() {
                let mut at = trail.last().map_or(0, |&(_, end)| end + 1);
                while at <= module.len() {
                    let end = module[at..].find('.').map_or(module.len(), |k| at + k);
                    node = tree.child(node, i as u32, at, end);
                    trail.push((node, end));
                    at = end + 1;
                }
            }
            prev = module;

            let here = &tree.nodes[node as usize];
            if here.tensors < CHECK_LEAVES_UP_TO {
                let end = (node != 0).then_some(module.len());
                let mut j = here.last_tensor;
                while j != NONE {
                    let other = &tensors[j as usize];
                    if leaf_after(&other.name, end) == leaf {
                        return Err(duplicate(other, t));
                    }
                    j = tree.prev_tensor[j as usize];
                }
            } else {
                crowded = true;
            }
            let here = &mut tree.nodes[node as usize];
            tree.prev_tensor[i] = here.last_tensor;
            here.last_tensor = i as u32;
            here.tensors += 1;
        }
        if crowded {
            check_unique(tensors)?;
        }
        Ok(tree)
    }

    /// Bytes `at..end` of the name that made `node`.
    fn slice(&self, node: &Node, at: usize, end: usize) -> &'n str {
        // The root of an empty inventory was made from no tensor: its name is "".
        self.tensors
            .get(node.name as usize)
            .and_then(|t| t.name.get(at..end))
            .unwrap_or("")
    }

    /// The child of `parent` whose segment is `name[at..end]` of tensor `tensor`, made if new.
    /// (Siblings' segments all start at `at`: they share the parent's path.)
    fn child(&mut self, parent: u32, tensor: u32, at: usize, end: usize) -> u32 {
        let segment = &self.tensors[tensor as usize].name[at..end];
        let value = number(segment);
        let p = &self.nodes[parent as usize];
        let found = if value.is_some_and(|n| p.max_number == NONE || n > p.max_number) {
            None
        } else if p.children >= INDEX_FROM {
            if !p.indexed {
                self.index_children(parent, at);
            }
            self.index.get(&(parent, segment)).copied()
        } else {
            let mut c = p.last_child;
            while c != NONE {
                let n = &self.nodes[c as usize];
                if self.slice(n, at, n.end as usize) == segment {
                    break;
                }
                c = n.prev_sibling;
            }
            (c != NONE).then_some(c)
        };
        if let Some(c) = found {
            return c;
        }
        let id = self.nodes.len() as u32;
        let node = Node::new(tensor, end as u32, self.nodes[parent as usize].last_child);
        self.nodes.push(node);
        let p = &mut self.nodes[parent as usize];
        p.last_child = id;
        p.children += 1;
        if let Some(n) = value
            && (p.max_number == NONE || n > p.max_number)
        {
            p.max_number = n;
        }
        if p.indexed {
            self.index.insert((parent, segment), id);
        }
        id
    }

    /// Puts the children of `parent`, whose segments start at `at`, in the index; later ones
    /// go in as they are made.
    fn index_children(&mut self, parent: u32, at: usize) {
        let p = &mut self.nodes[parent as usize];
        p.indexed = true;
        let mut c = p.last_child;
        while c != NONE {
            let n = &self.nodes[c as usize];
            self.index
                .insert((parent, self.slice(n, at, n.end as usize)), c);
            c = n.prev_sibling;
        }
    }
}

/// The length of the longest common byte prefix of `a` and `b`.
fn common_prefix(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n && a[i..i + 8] == b[i..i + 8] {
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// Where a module's path and last segment start in its names, and its parent's segment.
#[derive(Clone, Copy)]
struct Place<'n> {
    /// A path is its parent's, a dot and the segment; under an empty path (the root, or
    /// an empty first segment), just the segment.
    path_start: usize,
    segment_start: usize,
    parent_segment: &'n str,
}

impl Place<'_> {
    const ROOT: Place<'static> = Place {
        path_start: 0,
        segment_start: 0,
        parent_segment: "",
    };
}

/// A key to sort by, with what it sorts.
type Keyed<T> = ((u32, u64), T);

/// Orders each level of a [`Tree`] by [`segment_rank`] (stable: first appearance breaks
/// ties), marks the no-split units and numbers the tensors depth first.
struct Ordering<'t, 'n> {
    tree: &'t Tree<'n>,
    patterns: &'t [Pattern],
    default_no_split: bool,
    /// Old tensor indices in depth-first order.
    order: Vec<u32>,
    ranks: Ranks<'n>,
    /// The tensors directly under the module being ordered, with their ranks.
    leaves: Vec<Keyed<u32>>,
    /// The children of the modules being visited, with their ranks; one run per level.
    children: Vec<Keyed<u32>>,
}

impl<'n> Ordering<'_, 'n> {
    fn module(&mut self, id: u32, place: Place<'n>, inside_unit: bool) -> Module {
        let tree = self.tree;
        let node = &tree.nodes[id as usize];
        let end = node.end as usize;
        let path = tree.slice(node, place.path_start, end);
        let segment = tree.slice(node, place.segment_start, end);
        let numbered = segment.bytes().all(|b| b.is_ascii_digit());
        let is_unit = !inside_unit
            && !path.is_empty()
            && ((self.default_no_split
                && numbered
                && BLOCK_CONTAINERS.contains(&place.parent_segment))
                || self.patterns.iter().any(|p| p.matches(path)));

        // Tensors directly here come first, in order of their leaf names, then of listing;
        // their new indices are the next ones.
        let start = self.order.len();
        let mut j = node.last_tensor;
        while j != NONE {
            self.order.push(j);
            j = tree.prev_tensor[j as usize];
        }
        self.order[start..].reverse();
        if node.tensors > 1 {
            let leaf_end = (id != 0).then_some(end);
            self.leaves.clear();
            for &i in &self.order[start..] {
                let leaf = leaf_after(&tree.tensors[i as usize].name, leaf_end);
                self.leaves.push((self.ranks.of(leaf), i));
            }
            if !self.leaves.is_sorted() {
                self.leaves.sort_unstable();
                for (slot, &(_, i)) in self.order[start..].iter_mut().zip(&self.leaves) {
                    *slot = i;
                }
            }
        }
        let tensors: Vec<usize> = (start..self.order.len()).collect();

        // Then the children, in order of their last segment, then of first appearance
        // (their ids grow in that order).
        let segment_start = if id == 0 { 0 } else { end + 1 };
        let child_place = Place {
            path_start: if path.is_empty() {
                segment_start
            } else {
                place.path_start
            },
            segment_start,
            parent_segment: segment,
        };
        let from = self.children.len();
        let mut c = node.last_child;
        while c != NONE {
            let child = &tree.nodes[c as usize];
            let rank = if node.children > 1 {
                self.ranks
                    .of(tree.slice(child, segment_start, child.end as usize))
            } else {
                (0, 0)
            };
            self.children.push((rank, c));
            c = child.prev_sibling;
        }
        self.children[from..].reverse();
        if !self.children[from..].is_sorted() {
            self.children[from..].sort_unstable();
        }
        let mut children = Vec::with_capacity(node.children as usize);
        for k in from..self.children.len() {
            let child = self.children[k].1;
            children.push(self.module(child, child_place, inside_unit || is_unit));
        }
        self.children.truncate(from);
        Module {
            path: path.to_string(),
            tensors,
            children,
            no_split: is_unit,
            range: start..self.order.len(),
        }
    }
}

/// A fast hash for short keys (FxHash, as rustc uses): the child index hashes a few bytes
/// per look-up, where SipHash's setup would dominate. Its keys are names, not input chosen to
/// flood a bucket (which would cost time, not correctness).
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let mut last = [0u8; 8];
        let rest = chunks.remainder();
        last[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(last) ^ rest.len() as u64);
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn finish(&self) -> u64 {
        // The multiply mixes the high bits best; the table indexes with the low ones.
        self.0.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::arch::tensor;
    use crate::dtype::DType;

    /// The tree as the first implementation built it, kept as the reference: a node per
    /// module with owned segment names, searched along the list, each level sorted stably by
    /// rank. Lists every module depth first: (path, no-split, old indices of its tensors).
    #[derive(Default)]
    struct Naive {
        children: Vec<(String, Naive)>,
        tensors: Vec<usize>,
    }

    fn naive(names: &[String], patterns: &[Pattern]) -> Vec<(String, bool, Vec<usize>)> {
        let mut root = Naive::default();
        for (i, name) in names.iter().enumerate() {
            let (module, _) = name.rsplit_once('.').unwrap_or(("", name));
            let mut node = &mut root;
            if !module.is_empty() {
                for seg in module.split('.') {
                    let pos = match node.children.iter().position(|(s, _)| s == seg) {
                        Some(p) => p,
                        None => {
                            node.children.push((seg.to_string(), Naive::default()));
                            node.children.len() - 1
                        }
                    };
                    node = &mut node.children[pos].1;
                }
            }
            node.tensors.push(i);
        }
        fn walk(
            mut n: Naive,
            path: String,
            names: &[String],
            patterns: &[Pattern],
            inside: bool,
            out: &mut Vec<(String, bool, Vec<usize>)>,
        ) {
            let last = path.rsplit('.').next().unwrap_or("");
            let parent = path.rsplit('.').nth(1).unwrap_or("");
            let numbered = last.chars().all(|c| c.is_ascii_digit());
            let unit = !inside
                && !path.is_empty()
                && ((numbered && BLOCK_CONTAINERS.contains(&parent))
                    || patterns.iter().any(|p| p.matches(&path)));
            n.tensors
                .sort_by_key(|&i| segment_rank(names[i].rsplit('.').next().unwrap_or(&names[i])));
            n.children.sort_by_key(|(s, _)| segment_rank(s));
            out.push((path.clone(), unit, n.tensors));
            for (seg, child) in n.children {
                let child_path = if path.is_empty() {
                    seg
                } else {
                    format!("{path}.{seg}")
                };
                walk(child, child_path, names, patterns, inside || unit, out);
            }
        }
        let mut out = Vec::new();
        walk(root, String::new(), names, patterns, false, &mut out);
        out
    }

    fn flatten(m: &Module, order: &[u32], out: &mut Vec<(String, bool, Vec<usize>)>) {
        let old = m.tensors.iter().map(|&i| order[i] as usize).collect();
        out.push((m.path.clone(), m.no_split, old));
        for c in &m.children {
            flatten(c, order, out);
        }
    }

    fn tensors(names: &[String]) -> Vec<TensorInfo> {
        names
            .iter()
            .map(|n| tensor(n.as_str(), DType::BF16, &[1]))
            .collect()
    }

    /// Names from segments that exercise the edge cases: numbers plain and not (`007`),
    /// empty segments (leading, doubled and trailing dots), names with no dot, and blocks
    /// with more children than are searched along a list.
    fn names() -> impl Strategy<Value = Vec<String>> {
        let segment = prop_oneof![
            prop::sample::select(vec![
                "",
                "0",
                "1",
                "2",
                "10",
                "007",
                "layers",
                "h",
                "experts",
                "weight",
                "bias",
                "embed_tokens",
                "lm_head",
                "norm",
                "mlp",
                "A",
            ])
            .prop_map(str::to_string),
            (0u32..40).prop_map(|n| n.to_string()),
        ];
        // Distinct in module and leaf, which is what a duplicate is (`.x` and `x` are both
        // `x` at the root).
        prop::collection::vec(prop::collection::vec(segment, 1..6), 1..120).prop_map(|names| {
            let mut seen = std::collections::HashSet::new();
            names
                .into_iter()
                .map(|segments| segments.join("."))
                .filter(|n| {
                    seen.insert(
                        n.rsplit_once('.').unwrap_or(("", n)).1.to_string()
                            + "|"
                            + n.rsplit_once('.').map_or("", |(m, _)| m),
                    )
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn module_tree_matches_the_reference(names in names(), with_pattern in any::<bool>()) {
            let patterns = if with_pattern {
                vec![Pattern::new("mlp").unwrap(), Pattern::new("**.h.*").unwrap()]
            } else {
                Vec::new()
            };
            let (root, order) = module_tree(&tensors(&names), &patterns, true).unwrap();
            let mut got = Vec::new();
            flatten(&root, &order, &mut got);
            prop_assert_eq!(got, naive(&names, &patterns));
            let depth_first: Vec<usize> = order.iter().map(|&i| i as usize).collect();
            let mut listed = depth_first.clone();
            listed.sort_unstable();
            prop_assert_eq!(listed, (0..names.len()).collect::<Vec<_>>());
        }

        #[test]
        fn a_name_listed_twice_is_an_error(names in names(), pick in any::<prop::sample::Index>()) {
            let mut names = names;
            let again = names[pick.index(names.len())].clone();
            names.push(again.clone());
            let err = module_tree(&tensors(&names), &[], true).unwrap_err().to_string();
            prop_assert!(err.contains(&format!("`{again}`")), "{}", err);
        }
    }

    #[test]
    fn permute_follows_cycles() {
        let mut v = vec!['a', 'b', 'c', 'd', 'e'];
        permute(&mut v, vec![2, 0, 1, 4, 3]);
        assert_eq!(v, ['c', 'a', 'b', 'e', 'd']);
    }

    fn sorted(mut v: Vec<&str>) -> Vec<&str> {
        v.sort_by_key(|s| segment_rank(s));
        v
    }

    #[test]
    fn numbers_sort_numerically() {
        assert_eq!(sorted(vec!["10", "2", "1"]), ["1", "2", "10"]);
    }

    #[test]
    fn remembered_ranks_are_the_same() {
        let names = [
            "weight",
            "bias",
            "10",
            "2",
            "embed_out",
            "lm_head",
            "gate_proj",
            "up_proj",
            "w1",
            "LM_HEAD",
            "word_embeddings_x",
            "xembeddingy",
            "embedding",
            "",
            "007",
            "weight",
            "norm",
            "mlp",
            "experts",
            "0",
            "a",
            "b",
            "c",
            "d",
            "e",
            "f",
            "g",
            "h",
            "weight",
        ];
        let mut ranks = Ranks::new();
        for _ in 0..3 {
            for n in names {
                assert_eq!(ranks.of(n), segment_rank(n), "{n}");
            }
        }
        assert_eq!(segment_rank("xembeddingy"), (3, 0));
        assert_eq!(segment_rank("layernorm_embedding"), (3, 0));
        assert_eq!(segment_rank("embedin"), (3, 0));
        assert_eq!(segment_rank("embeddin"), (3, 0));
        assert_eq!(segment_rank("xembeddin"), (50, 0));
    }

    #[test]
    fn embeddings_blocks_norm_head() {
        assert_eq!(
            sorted(vec!["lm_head", "norm", "layers", "embed_tokens"]),
            ["embed_tokens", "layers", "norm", "lm_head"]
        );
        assert_eq!(
            sorted(vec!["decoder", "encoder", "shared"]),
            ["shared", "encoder", "decoder"]
        );
    }
}
