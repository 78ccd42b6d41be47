//! The placement algorithms, one file per strategy. Each returns units in execution order
//! and the room it reserved; [`crate::plan`] assembles the [`crate::Plan`].

pub(crate) mod sequential;

use crate::device::Device;
use crate::dtype::DType;
use crate::inventory::{Inventory, Module};
use crate::placement::Unit;

/// Units and reserves chosen by a strategy.
pub(crate) struct Placed {
    pub units: Vec<Unit>,
    pub reserved: Vec<(Device, u64)>,
}

/// Something that can be placed: a module (whole, or split into its parts) or one tensor.
#[derive(Clone, Copy)]
pub(crate) enum Entry<'a> {
    Module(&'a Module),
    Tensor(usize),
}

impl<'a> Entry<'a> {
    pub fn bytes(self, inv: &Inventory, dtype: Option<DType>) -> u64 {
        match self {
            Entry::Module(m) => inv.module_bytes(m, dtype),
            Entry::Tensor(i) => inv.tensor_bytes(i, dtype),
        }
    }

    pub fn path(self, inv: &Inventory) -> String {
        match self {
            Entry::Module(m) => m.path.clone(),
            Entry::Tensor(i) => inv.tensors[i].name.clone(),
        }
    }

    pub fn tensors(self) -> Vec<usize> {
        match self {
            Entry::Module(m) => m.all_tensors(),
            Entry::Tensor(i) => vec![i],
        }
    }

    /// The parts a module splits into: its own tensors, then its children. `None` for a
    /// tensor, a no-split unit, or a module with nothing below it.
    pub fn split(self) -> Option<Vec<Entry<'a>>> {
        match self {
            Entry::Module(m) if !m.no_split && (m.children.len() + m.tensors.len()) > 1 => Some(
                m.tensors
                    .iter()
                    .map(|&i| Entry::Tensor(i))
                    .chain(m.children.iter().map(Entry::Module))
                    .collect(),
            ),
            Entry::Module(m) if !m.no_split && m.children.len() == 1 => {
                Some(vec![Entry::Module(&m.children[0])])
            }
            _ => None,
        }
    }

    pub fn unit(self, inv: &Inventory, dtype: Option<DType>, device: Device) -> Unit {
        Unit {
            path: self.path(inv),
            tensors: self.tensors(),
            bytes: self.bytes(inv, dtype),
            device,
        }
    }
}

/// The top-level entries of an inventory: the root's parts.
pub(crate) fn top_level(inv: &Inventory) -> Vec<Entry<'_>> {
    Entry::Module(&inv.root)
        .split()
        .unwrap_or_else(|| vec![Entry::Module(&inv.root)])
}

#[cfg(test)]
mod tests;
