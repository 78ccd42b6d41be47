//! The model as PyTorch sees it: modules in definition order, each with its direct parameters,
//! its child modules and its buffers, sized as transformers' `compute_module_sizes` sizes them.
//!
//! Built from the inventory's module tree, reordered and completed by the architecture's
//! [`Layout`]; without a layout the inventory's tree is used as it is.

use std::collections::BTreeMap;

use super::layout::{Child, Layout};
use crate::dtype::DType;
use crate::inventory::{Inventory, Module};

/// A module, or one parameter.
#[derive(Debug, Clone)]
pub(super) struct Node {
    /// Dot path: the module path, or the parameter's full name.
    pub path: String,
    /// The inventory tensor of a parameter; `None` for a module.
    pub tensor: Option<usize>,
    /// Direct parameters, as `named_parameters(recurse=False)` lists them.
    pub params: Vec<Node>,
    /// Child modules, as `named_children()` lists them.
    pub children: Vec<Node>,
    /// Bytes of the module's own buffers.
    pub buffer_bytes: u64,
    /// Whether the module is one of the model's `_no_split_modules` blocks.
    pub no_split: bool,
    /// Bytes of everything below: parameters (tied ones count zero) and buffers.
    pub bytes: u64,
}

impl Node {
    /// Whether this is a module (not a parameter).
    pub fn is_module(&self) -> bool {
        self.tensor.is_none()
    }

    /// The inventory tensors below this node.
    pub fn tensors(&self) -> Vec<usize> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect(&self, out: &mut Vec<usize>) {
        out.extend(self.tensor);
        for n in self.params.iter().chain(&self.children) {
            n.collect(out);
        }
    }

    /// Visits this node and all below it, parents first.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Node)) {
        f(self);
        for n in self.params.iter().chain(&self.children) {
            n.walk(f);
        }
    }

    fn sum(&mut self) -> u64 {
        if self.is_module() {
            let below: u64 = self
                .params
                .iter_mut()
                .chain(self.children.iter_mut())
                .map(Node::sum)
                .fold(0u64, u64::saturating_add);
            self.bytes = below.saturating_add(self.buffer_bytes);
        }
        self.bytes
    }
}

/// The model tree and its tied-parameter groups.
#[derive(Debug)]
pub(super) struct Tree {
    pub root: Node,
    /// Each group: the sorted names of parameters sharing one storage, as transformers'
    /// `_init_infer_auto_device_map` builds them from `all_tied_weights_keys`.
    pub ties: Vec<Vec<String>>,
}

impl Tree {
    /// Builds the tree of `inv` with floating parameters sized as `dtype`.
    pub fn build(inv: &Inventory, dtype: Option<DType>, layout: Option<&Layout>) -> Tree {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in &inv.tensors {
            if let Some(owner) = &t.tied_to {
                groups
                    .entry(owner.clone())
                    .or_default()
                    .push(t.name.clone());
            }
        }
        for (tied, owner) in layout.iter().flat_map(|l| &l.ties) {
            let names = groups.entry(owner.clone()).or_default();
            if !names.contains(tied) {
                names.push(tied.clone());
            }
        }
        let tied: Vec<&str> = groups.values().flatten().map(String::as_str).collect();
        let ctx = Ctx {
            inv,
            dtype,
            layout,
            tied: &tied,
        };
        let mut root = ctx.node(&inv.root, false);
        root.sum();
        let ties = groups
            .into_iter()
            .map(|(owner, mut names)| {
                names.push(owner);
                names.sort();
                names
            })
            .collect();
        Tree { root, ties }
    }
}

struct Ctx<'a> {
    inv: &'a Inventory,
    dtype: Option<DType>,
    layout: Option<&'a Layout>,
    tied: &'a [&'a str],
}

impl Ctx<'_> {
    fn node(&self, m: &Module, inside_block: bool) -> Node {
        let no_split = match self.layout {
            Some(l) => {
                !inside_block
                    && m.path.rsplit_once('.').is_some_and(|(parent, last)| {
                        l.blocks.iter().any(|b| b == parent)
                            && !last.is_empty()
                            && last.chars().all(|c| c.is_ascii_digit())
                    })
            }
            None => m.no_split,
        };
        let params = m.tensors.iter().map(|&i| self.param(i)).collect();
        let mut children: Vec<Node> = m
            .children
            .iter()
            .map(|c| self.node(c, inside_block || no_split))
            .collect();
        let order = self
            .layout
            .and_then(|l| l.orders.iter().find(|(p, _)| *p == m.path))
            .map(|(_, order)| order.as_slice());
        if let Some(order) = order {
            children = reorder(&m.path, children, order);
        }
        Node {
            path: m.path.clone(),
            tensor: None,
            params,
            children,
            buffer_bytes: 0,
            no_split,
            bytes: 0,
        }
    }

    /// A parameter's bytes as transformers counts them: `numel × element_size` of the model
    /// built in `dtype` (floating parameters take `dtype`'s size, whatever the checkpoint
    /// stores); zero for a tied parameter. Floats narrower than 16 bits (FP8, FP6, FP4) are
    /// quantized storage that transformers' quantizers keep as stored, and so are integers.
    fn param(&self, i: usize) -> Node {
        let t = &self.inv.tensors[i];
        let bytes = if self.tied.contains(&t.name.as_str()) {
            0
        } else {
            match self.dtype {
                Some(d) if t.dtype.is_float() && t.dtype.bits() >= 16 => {
                    d.bytes_for(t.elems()).unwrap_or(u64::MAX)
                }
                _ => t.stored_bytes(),
            }
        };
        Node {
            path: t.name.clone(),
            tensor: Some(i),
            params: Vec::new(),
            children: Vec::new(),
            buffer_bytes: 0,
            no_split: false,
            bytes,
        }
    }
}

/// Puts `children` in definition order and adds the parameterless modules the order names.
fn reorder(parent: &str, mut children: Vec<Node>, order: &[Child]) -> Vec<Node> {
    let mut out = Vec::with_capacity(children.len() + order.len());
    for c in order {
        let path = if parent.is_empty() {
            c.name.to_string()
        } else {
            format!("{parent}.{}", c.name)
        };
        if let Some(pos) = children.iter().position(|n| n.path == path) {
            let mut node = children.remove(pos);
            node.buffer_bytes += c.parameterless.unwrap_or(0);
            out.push(node);
        } else if let Some(buffer_bytes) = c.parameterless {
            out.push(Node {
                path,
                tensor: None,
                params: Vec::new(),
                children: Vec::new(),
                buffer_bytes,
                no_split: false,
                bytes: 0,
            });
        }
    }
    out.extend(children);
    out
}
