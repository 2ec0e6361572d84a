//! An ordered set that answers "how many keys are below this one" in
//! O(log n): a treap (a binary search tree kept balanced by random heap
//! priorities) whose nodes count their subtree. The queue uses it so a job's
//! position costs the same at 100 jobs as at 100,000.
//!
//! Nodes live in one arena `Vec` and refer to each other by index; removed
//! nodes' slots are reused, so memory follows the set's largest size.

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Node<K> {
    key: K,
    heap: u64,
    left: u32,
    right: u32,
    size: u32,
}

#[derive(Debug, Clone)]
pub struct RankedSet<K> {
    nodes: Vec<Node<K>>,
    free: Vec<u32>,
    root: u32,
    rng: u64,
}

impl<K> Default for RankedSet<K> {
    fn default() -> Self {
        Self { nodes: Vec::new(), free: Vec::new(), root: NIL, rng: 0x9E37_79B9_7F4A_7C15 }
    }
}

impl<K: Ord + Copy> RankedSet<K> {
    pub fn len(&self) -> usize {
        self.size(self.root) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.root == NIL
    }

    /// How many keys in the set are less than `key` (present or not).
    pub fn rank(&self, key: &K) -> usize {
        let (mut at, mut below) = (self.root, 0usize);
        while at != NIL {
            let n = &self.nodes[at as usize];
            if n.key < *key {
                below += self.size(n.left) as usize + 1;
                at = n.right;
            } else {
                at = n.left;
            }
        }
        below
    }

    pub fn contains(&self, key: &K) -> bool {
        let mut at = self.root;
        while at != NIL {
            let n = &self.nodes[at as usize];
            match key.cmp(&n.key) {
                std::cmp::Ordering::Less => at = n.left,
                std::cmp::Ordering::Greater => at = n.right,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }

    /// Adds `key`; false if it was there already.
    pub fn insert(&mut self, key: K) -> bool {
        if self.contains(&key) {
            return false;
        }
        let node = self.alloc(key);
        let (below, above) = self.split(self.root, &key);
        let left = self.merge(below, node);
        self.root = self.merge(left, above);
        true
    }

    /// Removes `key`; false if it was not there.
    pub fn remove(&mut self, key: &K) -> bool {
        if !self.contains(key) {
            return false;
        }
        let (below, rest) = self.split(self.root, key);
        // `rest` starts with `key`: take its smallest node off.
        let (found, above) = self.split_first(rest);
        if found != NIL {
            self.free.push(found);
        }
        self.root = self.merge(below, above);
        true
    }

    fn size(&self, at: u32) -> u32 {
        if at == NIL { 0 } else { self.nodes[at as usize].size }
    }

    fn fix(&mut self, at: u32) {
        let (l, r) = (self.nodes[at as usize].left, self.nodes[at as usize].right);
        self.nodes[at as usize].size = 1 + self.size(l) + self.size(r);
    }

    fn alloc(&mut self, key: K) -> u32 {
        // xorshift64*: heap priorities need only be spread, not secret.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let heap = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let node = Node { key, heap, left: NIL, right: NIL, size: 1 };
        match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    /// Splits `at` into (keys < `key`, keys >= `key`).
    fn split(&mut self, at: u32, key: &K) -> (u32, u32) {
        if at == NIL {
            return (NIL, NIL);
        }
        if self.nodes[at as usize].key < *key {
            let (l, r) = self.split(self.nodes[at as usize].right, key);
            self.nodes[at as usize].right = l;
            self.fix(at);
            (at, r)
        } else {
            let (l, r) = self.split(self.nodes[at as usize].left, key);
            self.nodes[at as usize].left = r;
            self.fix(at);
            (l, at)
        }
    }

    /// Splits off the smallest node of `at`: (that node, the rest).
    fn split_first(&mut self, at: u32) -> (u32, u32) {
        if at == NIL {
            return (NIL, NIL);
        }
        let left = self.nodes[at as usize].left;
        if left == NIL {
            let right = self.nodes[at as usize].right;
            self.nodes[at as usize].right = NIL;
            self.fix(at);
            return (at, right);
        }
        let (first, rest) = self.split_first(left);
        self.nodes[at as usize].left = rest;
        self.fix(at);
        (first, at)
    }

    /// Joins two treaps where every key of `a` is below every key of `b`.
    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.nodes[a as usize].heap > self.nodes[b as usize].heap {
            let r = self.merge(self.nodes[a as usize].right, b);
            self.nodes[a as usize].right = r;
            self.fix(a);
            a
        } else {
            let l = self.merge(a, self.nodes[b as usize].left);
            self.nodes[b as usize].left = l;
            self.fix(b);
            b
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn ranks_count_the_keys_below() {
        let mut s = RankedSet::default();
        for k in [50u64, 10, 30, 20, 40] {
            assert!(s.insert(k));
        }
        assert!(!s.insert(30));
        assert_eq!((s.rank(&10), s.rank(&35), s.rank(&50), s.rank(&99)), (0, 3, 4, 5));
        assert!(s.remove(&30));
        assert!(!s.remove(&30));
        assert_eq!((s.len(), s.rank(&40)), (4, 2));
        for k in [10, 20, 40, 50] {
            assert!(s.remove(&k));
        }
        assert!(s.is_empty());
    }

    #[test]
    fn a_hundred_thousand_in_order_stay_shallow() {
        // Keys arrive in order (job sequence numbers): a plain BST would be a list.
        let mut s = RankedSet::default();
        for k in 0..100_000u64 {
            s.insert(k);
        }
        assert_eq!(s.rank(&77_777), 77_777);
        fn depth(s: &RankedSet<u64>, at: u32) -> usize {
            if at == NIL {
                return 0;
            }
            let n = &s.nodes[at as usize];
            1 + depth(s, n.left).max(depth(s, n.right))
        }
        assert!(depth(&s, s.root) < 60, "depth {}", depth(&s, s.root));
    }

    proptest! {
        #[test]
        fn agrees_with_a_btreeset(ops in proptest::collection::vec((any::<bool>(), 0u16..300), 1..400)) {
            let mut s = RankedSet::default();
            let mut model = BTreeSet::new();
            for (add, k) in ops {
                if add {
                    prop_assert_eq!(s.insert(k), model.insert(k));
                } else {
                    prop_assert_eq!(s.remove(&k), model.remove(&k));
                }
                prop_assert_eq!(s.len(), model.len());
                prop_assert_eq!(s.rank(&k), model.range(..k).count());
                prop_assert_eq!(s.contains(&k), model.contains(&k));
            }
        }
    }
}
