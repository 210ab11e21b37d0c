//! [`Forgetting`]: what deleting memories does to the history of superseded versions.

use std::collections::{BTreeMap, BTreeSet};

use nexus_common::MemoryId;

/// The plan of [`Store::delete_memories`](crate::Store::delete_memories), computed the same way
/// by every store.
///
/// The versions of a fact form a chain: each older version's `superseded_by` points to the
/// version that replaced it, and the newest version (the chain's head, the one the companion
/// uses) has none. Forgetting
///
/// - **the current version** of a fact forgets its whole history: the older versions it
///   superseded, directly or through others, are deleted with it. Keeping them would either
///   bring an old version back as current (what `ON DELETE SET NULL` would do: the user makes
///   the companion forget their new address and it "remembers" the old one) or leave them
///   superseded by a memory that no longer exists.
/// - **an older version** removes just that version from the history: the version before it
///   is now superseded by the one after it, so the history stays one chain and nothing comes
///   back as current.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forgetting {
    /// Every memory to delete, older versions before the versions that superseded them, so
    /// that deleting them one by one never leaves a memory superseded by a missing one.
    pub delete: Vec<MemoryId>,
    /// Surviving memories whose successor is deleted, with their new successor: the first
    /// newer version that survives. Applied before the deletions.
    pub relink: Vec<(MemoryId, MemoryId)>,
}

impl Forgetting {
    /// Plans forgetting the memories `forget` (ids not in `links` are ignored). `links` maps
    /// memory ids to their `superseded_by`; it must hold at least every memory of the
    /// companions whose memories are forgotten (chains never cross companions).
    pub fn plan(links: &BTreeMap<MemoryId, Option<MemoryId>>, forget: &[MemoryId]) -> Self {
        let forget: BTreeSet<MemoryId> = forget
            .iter()
            .filter(|id| links.contains_key(id))
            .copied()
            .collect();
        if forget.is_empty() {
            return Self::default();
        }
        let chains = Chains::of(links);
        let mut delete = Vec::new();
        let mut relink = Vec::new();
        for (&id, &next) in links {
            let (head, depth) = chains.head_and_depth(id);
            if forget.contains(&id) || forget.contains(&head) {
                delete.push((depth, id));
            } else if let Some(next) = next
                && forget.contains(&next)
            {
                match first_kept(links, next, &forget) {
                    Some(to) => relink.push((id, to)),
                    // Only in a damaged store (a cycle of forgotten memories): deleting is the
                    // choice that never resurrects anything.
                    None => delete.push((depth, id)),
                }
            }
        }
        // Farther from the head is older: delete those first.
        delete.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        Self {
            delete: delete.into_iter().map(|(_, id)| id).collect(),
            relink,
        }
    }
}

/// The head of each memory's chain and its distance to it.
struct Chains(BTreeMap<MemoryId, (MemoryId, usize)>);

impl Chains {
    fn of(links: &BTreeMap<MemoryId, Option<MemoryId>>) -> Self {
        let mut known: BTreeMap<MemoryId, (MemoryId, usize)> = BTreeMap::new();
        for &start in links.keys() {
            // Walk to a memory whose head is known, or to a head; then fill in the path.
            let mut path = Vec::new();
            let mut on_path = BTreeSet::new();
            let mut current = start;
            let (head, mut depth) = loop {
                if let Some(&resolved) = known.get(&current) {
                    break resolved;
                }
                match links.get(&current).copied().flatten() {
                    // `on_path`: a cycle can only exist in a damaged store; it ends the walk.
                    Some(next) if on_path.insert(current) => {
                        path.push(current);
                        current = next;
                    }
                    _ => {
                        known.insert(current, (current, 0));
                        break (current, 0);
                    }
                }
            };
            for id in path.into_iter().rev() {
                depth += 1;
                known.insert(id, (head, depth));
            }
        }
        Self(known)
    }

    fn head_and_depth(&self, id: MemoryId) -> (MemoryId, usize) {
        self.0.get(&id).copied().unwrap_or((id, 0))
    }
}

/// The first memory from `from` on (following `superseded_by`) that is not forgotten.
fn first_kept(
    links: &BTreeMap<MemoryId, Option<MemoryId>>,
    from: MemoryId,
    forget: &BTreeSet<MemoryId>,
) -> Option<MemoryId> {
    let mut current = from;
    // At most one step per memory: more means a cycle.
    for _ in 0..=links.len() {
        if !forget.contains(&current) {
            return Some(current);
        }
        current = links.get(&current).copied().flatten()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memories 1..=n, each superseded by the next: 1 -> 2 -> ... -> n.
    fn chain(ids: &[MemoryId]) -> BTreeMap<MemoryId, Option<MemoryId>> {
        ids.iter()
            .enumerate()
            .map(|(i, &id)| (id, ids.get(i + 1).copied()))
            .collect()
    }

    fn ids(n: usize) -> Vec<MemoryId> {
        (0..n).map(|_| MemoryId::new()).collect()
    }

    #[test]
    fn forgetting_nothing_or_missing_ids_plans_nothing() {
        let m = ids(3);
        let links = chain(&m);
        assert_eq!(Forgetting::plan(&links, &[]), Forgetting::default());
        assert_eq!(
            Forgetting::plan(&links, &[MemoryId::new()]),
            Forgetting::default()
        );
    }

    #[test]
    fn forgetting_the_current_version_forgets_its_history_oldest_first() {
        let m = ids(4);
        let mut links = chain(&m);
        let other = MemoryId::new();
        links.insert(other, None);
        let plan = Forgetting::plan(&links, &[m[3]]);
        assert_eq!(plan.delete, vec![m[0], m[1], m[2], m[3]]);
        assert!(plan.relink.is_empty());
    }

    #[test]
    fn forgetting_older_versions_relinks_around_them() {
        let m = ids(5);
        let links = chain(&m);
        let plan = Forgetting::plan(&links, &[m[2], m[1]]);
        assert_eq!(plan.delete, vec![m[1], m[2]]);
        assert_eq!(plan.relink, vec![(m[0], m[3])]);

        let plan = Forgetting::plan(&links, &[m[0]]);
        assert_eq!(plan.delete, vec![m[0]]);
        assert!(plan.relink.is_empty());
    }

    #[test]
    fn a_cycle_from_a_damaged_store_ends() {
        let (a, b) = (MemoryId::new(), MemoryId::new());
        let links = BTreeMap::from([(a, Some(b)), (b, Some(a))]);
        let plan = Forgetting::plan(&links, &[a, b]);
        assert_eq!(plan.delete.len(), 2);
        assert!(plan.relink.is_empty());
    }
}
