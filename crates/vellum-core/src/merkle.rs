//! The Merkle tree of every CCF ledger, written here because it *is* the product.
//!
//! Shape and hashing follow CCF's `merklecpp` exactly (see `docs/formats.md`):
//!
//! * interior node = `SHA-256(left || right)`, with **no** RFC 6962 domain-separation prefixes;
//!   leaves are inserted as 32-byte digests and are not hashed again;
//! * the shape is RFC 6962's Merkle Tree Hash: for `n` leaves and `k` the largest power of two
//!   below `n`, `MTH(D[0:n]) = H(MTH(D[0:k]) || MTH(D[k:n]))`;
//! * leaf index = seqno, and leaf 0 is 32 zero bytes in a ledger (the caller appends it).
//!
//! The tree keeps, for every height `h`, the hashes of the *perfect* subtrees of `2^h` leaves
//! that are complete, so appends are amortised O(1), and roots and inclusion paths at any size
//! are O(log n). [`MerkleTree::flush_to`] forgets old leaves while keeping the roots of the
//! full subtrees on the left edge (CCF's `flush`), [`MerkleTree::retract_to`] drops leaves
//! after an index (CCF's `retract`, used on rollback), and [`MerkleTree::serialize`] /
//! [`MerkleTree::deserialize`] give the bytes CCF stores in `public:ccf.internal.tree`.

use std::collections::VecDeque;

use crate::hash::Hash;

/// Perfect-subtree hashes at one height: `nodes[i]` covers leaves
/// `[(base + i) * 2^h, (base + i + 1) * 2^h)`.
#[derive(Clone, Debug, Default)]
struct Level {
    base: u64,
    nodes: VecDeque<Hash>,
}

impl Level {
    /// Forgets the nodes before `new_base` (no-op if none are held).
    fn drop_below(&mut self, new_base: u64) {
        if new_base > self.base {
            let drop = usize::try_from(new_base - self.base)
                .unwrap_or(usize::MAX)
                .min(self.nodes.len());
            self.nodes.drain(..drop);
            self.base = new_base;
        }
    }
}

/// An incremental CCF Merkle tree. See the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct MerkleTree {
    size: u64,
    /// Leaves below this index have been flushed (CCF's `num_flushed`).
    offset: u64,
    /// Below this leaf (a multiple of `2^TRIM_HEIGHT`), heights under [`TRIM_HEIGHT`] are not
    /// held; see [`MerkleTree::trim_to`].
    trimmed: u64,
    levels: Vec<Level>,
}

/// Heights that [`MerkleTree::trim_to`] drops for old leaves: blocks of 16 leaves.
pub const TRIM_HEIGHT: u32 = 4;

/// Leaves per trimmed block.
pub const TRIM_BLOCK: u64 = 1 << TRIM_HEIGHT;

/// One step of an inclusion path, from the leaf upwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathStep {
    /// The sibling is on the left: `h = H(sibling || h)`.
    Left(Hash),
    /// The sibling is on the right: `h = H(h || sibling)`.
    Right(Hash),
}

/// An inclusion path (audit path) from a leaf to a root, leaf end first.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Path {
    /// Steps from the leaf upwards.
    pub steps: Vec<PathStep>,
}

/// Why a tree operation could not be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// The tree (or the requested size) has no leaves: an empty tree has no root.
    #[error("an empty Merkle tree has no root")]
    Empty,
    /// The index or size lies beyond the leaves the tree has.
    #[error("index {index} is beyond the tree's {size} leaves")]
    OutOfRange {
        /// The index or size asked for.
        index: u64,
        /// The tree's size.
        size: u64,
    },
    /// The leaf or size lies in the flushed part of the tree.
    #[error("leaf {index} has been flushed (tree keeps leaves from {offset})")]
    Flushed {
        /// The index or size asked for.
        index: u64,
        /// The first index still held.
        offset: u64,
    },
}

/// Why serialized tree bytes could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeDecodeError {
    /// Fewer than the 16 header bytes.
    #[error("serialized tree is {0} bytes, shorter than its 16-byte header")]
    TooShort(usize),
    /// The length does not match the header's leaf count and flushed-root count.
    #[error("serialized tree is {actual} bytes, its header implies {expected}")]
    LengthMismatch {
        /// Bytes implied by the header.
        expected: u128,
        /// Bytes present.
        actual: usize,
    },
    /// The leaf counts overflow 64 bits.
    #[error("serialized tree leaf counts overflow")]
    Overflow,
    /// A snapshot's sizes and levels do not describe a tree.
    #[error("tree snapshot: bad {0}")]
    Shape(&'static str),
    /// A snapshot node is not the hash of its two children.
    #[error("tree snapshot: node {index} at height {height} does not match its children")]
    Inconsistent {
        /// Height of the node.
        height: u32,
        /// Index of the node at that height.
        index: u64,
    },
}

/// Largest power of two strictly less than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> MerkleTree {
        MerkleTree::default()
    }

    /// Number of leaves appended so far, flushed ones included.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Index of the first leaf still held (leaves below it were flushed).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends a leaf digest (not hashed again).
    pub fn append(&mut self, leaf: Hash) {
        let mut h = 0usize;
        let mut hash = leaf;
        let mut j = self.size;
        loop {
            if self.levels.len() <= h {
                self.levels.push(Level {
                    base: j,
                    nodes: VecDeque::new(),
                });
            }
            let level = &mut self.levels[h];
            level.nodes.push_back(hash);
            if j & 1 == 0 {
                break;
            }
            // j is a right child: its left sibling j-1 is held (flush keeps it, see flush_to).
            let idx = (j - 1).checked_sub(level.base).map(|i| i as usize);
            let Some(left) = idx.and_then(|i| level.nodes.get(i)) else {
                debug_assert!(false, "left sibling missing at height {h}, index {}", j - 1);
                break;
            };
            hash = Hash::node(left, &hash);
            j >>= 1;
            h += 1;
        }
        self.size += 1;
    }

    /// The leaf at `index`.
    pub fn leaf(&self, index: u64) -> Result<Hash, TreeError> {
        self.check_index(index)?;
        self.node(0, index).ok_or(TreeError::Flushed {
            index,
            offset: self.offset,
        })
    }

    fn check_index(&self, index: u64) -> Result<(), TreeError> {
        if index >= self.size {
            return Err(TreeError::OutOfRange {
                index,
                size: self.size,
            });
        }
        if index < self.offset {
            return Err(TreeError::Flushed {
                index,
                offset: self.offset,
            });
        }
        Ok(())
    }

    fn check_size(&self, size: u64) -> Result<(), TreeError> {
        if size == 0 {
            return Err(TreeError::Empty);
        }
        if size > self.size {
            return Err(TreeError::OutOfRange {
                index: size,
                size: self.size,
            });
        }
        if size < self.offset {
            return Err(TreeError::Flushed {
                index: size,
                offset: self.offset,
            });
        }
        Ok(())
    }

    /// Perfect node at height `h`, index `j`, if held.
    fn node(&self, h: u32, j: u64) -> Option<Hash> {
        let level = self.levels.get(h as usize)?;
        let i = j.checked_sub(level.base)?;
        level.nodes.get(usize::try_from(i).ok()?).copied()
    }

    /// MTH of leaves `[lo, hi)`, where `lo` is a multiple of the largest power of two in
    /// `hi - lo` (true of every range the RFC 6962 recursion visits).
    fn range_hash(&self, lo: u64, hi: u64) -> Option<Hash> {
        range_hash_with(lo, hi, &|h, j| self.node(h, j))
    }

    /// The root over all leaves.
    pub fn root(&self) -> Result<Hash, TreeError> {
        self.root_at(self.size)
    }

    /// The root the tree had when it held `size` leaves (`offset <= size <= self.size()`).
    pub fn root_at(&self, size: u64) -> Result<Hash, TreeError> {
        self.check_size(size)?;
        self.range_hash(0, size).ok_or(TreeError::Flushed {
            index: size,
            offset: self.offset,
        })
    }

    /// The inclusion path of leaf `index` in the tree of the first `size` leaves.
    pub fn path(&self, index: u64, size: u64) -> Result<Path, TreeError> {
        self.check_size(size)?;
        if index >= size {
            return Err(TreeError::OutOfRange { index, size });
        }
        self.check_index(index)?;
        self.path_with(index, size, &|h, j| self.node(h, j))
    }

    fn path_with(
        &self,
        index: u64,
        size: u64,
        node: &dyn Fn(u32, u64) -> Option<Hash>,
    ) -> Result<Path, TreeError> {
        let flushed = TreeError::Flushed {
            index,
            offset: self.offset.max(self.trimmed),
        };
        let (mut lo, mut hi) = (0u64, size);
        let mut steps = Vec::new();
        while hi - lo > 1 {
            let k = split_point(hi - lo);
            if index < lo + k {
                steps.push(PathStep::Right(
                    range_hash_with(lo + k, hi, node).ok_or(flushed)?,
                ));
                hi = lo + k;
            } else {
                let h = k.trailing_zeros();
                steps.push(PathStep::Left(node(h, lo >> h).ok_or(flushed)?));
                lo += k;
            }
        }
        steps.reverse();
        Ok(Path { steps })
    }

    /// Drops the nodes under height [`TRIM_HEIGHT`] (leaves and the three levels above them,
    /// 94% of the tree's memory) for leaves below `index` rounded down to a block of
    /// [`TRIM_BLOCK`]. Roots and paths that reach into that part then need those blocks'
    /// leaves again: [`MerkleTree::trimmed_blocks`] names them and
    /// [`MerkleTree::path_from_blocks`] takes them (a ledger recomputes them from its entries).
    /// Appends are unaffected. The caller must never retract below `index` (a ledger trims only
    /// committed transactions); [`MerkleTree::retract_to`] refuses to.
    pub fn trim_to(&mut self, index: u64) {
        let b = (index.min(self.size) / TRIM_BLOCK) * TRIM_BLOCK;
        if b <= self.trimmed {
            return;
        }
        for (h, level) in self
            .levels
            .iter_mut()
            .enumerate()
            .take(TRIM_HEIGHT as usize)
        {
            level.drop_below(b >> h);
            level.nodes.shrink_to_fit();
        }
        self.trimmed = b;
    }

    /// Leaves below this index had their low heights trimmed ([`MerkleTree::trim_to`]).
    pub fn trimmed(&self) -> u64 {
        self.trimmed
    }

    /// The first leaf of every trimmed block whose leaves [`MerkleTree::path`] of `index` at
    /// `size` needs (at most two: the block of `index` and the block of `size - 1`).
    pub fn trimmed_blocks(&self, index: u64, size: u64) -> Vec<u64> {
        let mut out = Vec::new();
        for leaf in [index, size.saturating_sub(1)] {
            let block = (leaf / TRIM_BLOCK) * TRIM_BLOCK;
            if leaf < self.trimmed && !out.contains(&block) {
                out.push(block);
            }
        }
        out
    }

    /// [`MerkleTree::path`] with the leaves of the trimmed blocks it needs: `blocks` holds,
    /// for each block [`MerkleTree::trimmed_blocks`] named, its first leaf index and its
    /// [`TRIM_BLOCK`] leaves. Leaves that do not hash up to the held nodes give a path that
    /// does not verify, never a panic.
    pub fn path_from_blocks(
        &self,
        index: u64,
        size: u64,
        blocks: &[(u64, Vec<Hash>)],
    ) -> Result<Path, TreeError> {
        self.check_size(size)?;
        if index >= size {
            return Err(TreeError::OutOfRange { index, size });
        }
        self.check_index(index)?;
        // Every node under TRIM_HEIGHT of the given blocks.
        let mut extra: Vec<((u32, u64), Hash)> = Vec::new();
        for (start, leaves) in blocks {
            if !start.is_multiple_of(TRIM_BLOCK) || leaves.len() as u64 != TRIM_BLOCK {
                continue;
            }
            let mut row = leaves.clone();
            for h in 0..TRIM_HEIGHT {
                for (i, n) in row.iter().enumerate() {
                    extra.push(((h, (start >> h) + i as u64), *n));
                }
                row = row.chunks(2).map(|p| Hash::node(&p[0], &p[1])).collect();
            }
        }
        self.path_with(index, size, &|h, j| {
            self.node(h, j)
                .or_else(|| extra.iter().find(|(k, _)| *k == (h, j)).map(|(_, v)| *v))
        })
    }

    /// Forgets leaves below `index`, keeping the roots of the full left-edge subtrees so that
    /// roots and paths at sizes `>= index` stay computable (CCF's `flush_to`).
    pub fn flush_to(&mut self, index: u64) -> Result<(), TreeError> {
        if index > self.size {
            return Err(TreeError::OutOfRange {
                index,
                size: self.size,
            });
        }
        if index <= self.offset {
            return Ok(());
        }
        for (h, level) in self.levels.iter_mut().enumerate() {
            // Keep node (index >> h) - 1 when bit h of index is set: it is a flushed left-edge
            // root that later parents and roots need.
            level.drop_below((index >> h) & !1);
        }
        self.offset = index;
        Ok(())
    }

    /// Keeps leaves `0..=index` and drops everything after (CCF's `retract_to`, used when
    /// consensus rolls back uncommitted entries).
    pub fn retract_to(&mut self, index: u64) -> Result<(), TreeError> {
        self.check_index(index).or_else(|e| match e {
            // Retracting to the last flushed leaf's successor boundary is still fine.
            TreeError::Flushed { .. } if index + 1 == self.offset => Ok(()),
            e => Err(e),
        })?;
        let new_size = index + 1;
        if new_size < self.trimmed {
            return Err(TreeError::Flushed {
                index,
                offset: self.trimmed,
            });
        }
        for (h, level) in self.levels.iter_mut().enumerate() {
            let keep = (new_size >> h).saturating_sub(level.base);
            level
                .nodes
                .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
        }
        self.size = new_size;
        Ok(())
    }

    /// CCF's serialized form of leaves `[from, to)`: big-endian `u64 to - from`, `u64 from`,
    /// the leaves, then one hash per set bit of `from` (lowest bit first), the roots of the
    /// flushed left-edge subtrees. CCF stores this in every signature transaction with
    /// `to` = the signature's seqno.
    pub fn serialize(&self, from: u64, to: u64) -> Result<Vec<u8>, TreeError> {
        if to > self.size || from > to {
            return Err(TreeError::OutOfRange {
                index: to,
                size: self.size,
            });
        }
        if from < self.offset {
            return Err(TreeError::Flushed {
                index: from,
                offset: self.offset,
            });
        }
        let flushed = TreeError::Flushed {
            index: from,
            offset: self.offset,
        };
        let n = to - from;
        let mut out = Vec::with_capacity(16 + 32 * (n as usize + from.count_ones() as usize));
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&from.to_be_bytes());
        for i in from..to {
            out.extend_from_slice(&self.node(0, i).ok_or(flushed)?.0);
        }
        for h in 0..64u32 {
            if from & (1u64 << h) != 0 {
                out.extend_from_slice(&self.node(h, (from >> h) - 1).ok_or(flushed)?.0);
            }
        }
        Ok(out)
    }

    /// Reads CCF's serialized form (see [`MerkleTree::serialize`]) into a tree whose size is
    /// `from + leaves` and whose offset is `from`.
    pub fn deserialize(bytes: &[u8]) -> Result<MerkleTree, TreeDecodeError> {
        let header: [u8; 16] = bytes
            .get(..16)
            .and_then(|b| b.try_into().ok())
            .ok_or(TreeDecodeError::TooShort(bytes.len()))?;
        let mut n = [0u8; 8];
        n.copy_from_slice(&header[..8]);
        let num_leaves = u64::from_be_bytes(n);
        n.copy_from_slice(&header[8..]);
        let num_flushed = u64::from_be_bytes(n);
        num_flushed
            .checked_add(num_leaves)
            .ok_or(TreeDecodeError::Overflow)?;
        let expected =
            16u128 + 32 * (u128::from(num_leaves) + u128::from(num_flushed.count_ones()));
        if expected != bytes.len() as u128 {
            return Err(TreeDecodeError::LengthMismatch {
                expected,
                actual: bytes.len(),
            });
        }
        let hashes: Vec<Hash> = hashes(&bytes[16..]).collect();
        let (leaves, roots) = hashes.split_at(num_leaves as usize);
        let top = 64 - num_flushed.leading_zeros();
        let mut levels = Vec::with_capacity(top as usize);
        let mut roots = roots.iter();
        for h in 0..top {
            let j = num_flushed >> h;
            let mut level = Level {
                base: j,
                nodes: VecDeque::new(),
            };
            if j & 1 == 1 {
                level.base = j - 1;
                if let Some(r) = roots.next() {
                    level.nodes.push_back(*r);
                }
            }
            levels.push(level);
        }
        let mut tree = MerkleTree {
            size: num_flushed,
            offset: num_flushed,
            trimmed: 0,
            levels,
        };
        for leaf in leaves {
            tree.append(*leaf);
        }
        Ok(tree)
    }

    /// The tree as it was at `size` leaves, whole, in Vellum's own snapshot form (a node
    /// restarts from it instead of re-hashing its ledger; `docs/formats.md`): little-endian
    /// `u64 size`, `u64 offset`, `u64 trimmed`, `u8` number of heights `L` (`size`'s bit
    /// length), then for each height `h < L` a `u64 base` and the `(size >> h) - base` nodes
    /// from `base` on. Nodes of complete subtrees never change once appended, so this works at
    /// any `size` between `max(offset, trimmed)` and [`MerkleTree::size`].
    pub fn snapshot(&self, size: u64) -> Result<Vec<u8>, TreeError> {
        if size > self.size {
            return Err(TreeError::OutOfRange {
                index: size,
                size: self.size,
            });
        }
        let flushed = TreeError::Flushed {
            index: size,
            offset: self.offset.max(self.trimmed),
        };
        if size < self.offset.max(self.trimmed) {
            return Err(flushed);
        }
        let heights = 64 - size.leading_zeros();
        let mut out = Vec::with_capacity(25 + 8 * heights as usize + 64 * self.held(size));
        for v in [size, self.offset, self.trimmed] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(heights as u8);
        for h in 0..heights {
            let end = size >> h;
            let base = self.levels.get(h as usize).map_or(end, |l| l.base.min(end));
            out.extend_from_slice(&base.to_le_bytes());
            for j in base..end {
                out.extend_from_slice(&self.node(h, j).ok_or(flushed)?.0);
            }
        }
        Ok(out)
    }

    /// Nodes held at or below `size` leaves (a capacity hint).
    fn held(&self, size: u64) -> usize {
        self.levels
            .iter()
            .enumerate()
            .map(|(h, l)| (size >> h).saturating_sub(l.base) as usize)
            .sum()
    }

    /// Reads [`MerkleTree::snapshot`]'s form back. Every node whose two children are held is
    /// checked against them, so a damaged snapshot is refused (only the lowest held nodes, which
    /// have no children held, cannot be checked this way; the ledger binds those with a MAC and
    /// the signed root). Never panics on arbitrary bytes.
    pub fn from_snapshot(bytes: &[u8]) -> Result<MerkleTree, TreeDecodeError> {
        let mut at = 0usize;
        let u64_at = |at: &mut usize| -> Result<u64, TreeDecodeError> {
            let b = bytes
                .get(*at..*at + 8)
                .ok_or(TreeDecodeError::TooShort(bytes.len()))?;
            *at += 8;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Ok(u64::from_le_bytes(a))
        };
        let size = u64_at(&mut at)?;
        let offset = u64_at(&mut at)?;
        let trimmed = u64_at(&mut at)?;
        let heights = *bytes
            .get(at)
            .ok_or(TreeDecodeError::TooShort(bytes.len()))?;
        at += 1;
        if offset > size || trimmed > size || !trimmed.is_multiple_of(TRIM_BLOCK) {
            return Err(TreeDecodeError::Shape("offset or trim point"));
        }
        if u32::from(heights) != 64 - size.leading_zeros() {
            return Err(TreeDecodeError::Shape("number of heights"));
        }
        let mut levels = Vec::with_capacity(heights as usize);
        for h in 0..u32::from(heights) {
            let base = u64_at(&mut at)?;
            let end = size >> h;
            if base > end {
                return Err(TreeDecodeError::Shape("level base"));
            }
            // A later append at an odd position needs its left sibling.
            if end % 2 == 1 && base == end {
                return Err(TreeDecodeError::Shape("missing left sibling"));
            }
            let len = usize::try_from(end - base)
                .ok()
                .and_then(|n| n.checked_mul(32))
                .ok_or(TreeDecodeError::Overflow)?;
            let nodes = bytes
                .get(at..at.saturating_add(len))
                .ok_or(TreeDecodeError::TooShort(bytes.len()))?;
            at += len;
            levels.push(Level {
                base,
                nodes: hashes(nodes).collect(),
            });
        }
        if at != bytes.len() {
            return Err(TreeDecodeError::LengthMismatch {
                expected: at as u128,
                actual: bytes.len(),
            });
        }
        let tree = MerkleTree {
            size,
            offset,
            trimmed,
            levels,
        };
        for h in 1..u32::from(heights) {
            let level = &tree.levels[h as usize];
            for (i, n) in level.nodes.iter().enumerate() {
                let j = level.base + i as u64;
                if let (Some(l), Some(r)) = (tree.node(h - 1, 2 * j), tree.node(h - 1, 2 * j + 1))
                    && Hash::node(&l, &r) != *n
                {
                    return Err(TreeDecodeError::Inconsistent {
                        height: h,
                        index: j,
                    });
                }
            }
        }
        Ok(tree)
    }
}

/// The 32-byte hashes in `bytes`, back to back (a partial last one is ignored).
fn hashes(bytes: &[u8]) -> impl Iterator<Item = Hash> + '_ {
    bytes.chunks_exact(32).map(|c| {
        let mut a = [0u8; 32];
        a.copy_from_slice(c);
        Hash(a)
    })
}

/// [`MerkleTree::range_hash`] over any node lookup.
fn range_hash_with(lo: u64, hi: u64, node: &dyn Fn(u32, u64) -> Option<Hash>) -> Option<Hash> {
    let n = hi - lo;
    let mut start = lo;
    let mut blocks: Vec<Hash> = Vec::with_capacity(n.count_ones() as usize);
    for h in (0..64u32).rev() {
        if n & (1u64 << h) != 0 {
            blocks.push(node(h, start >> h)?);
            start += 1u64 << h;
        }
    }
    let mut acc = blocks.pop()?;
    while let Some(left) = blocks.pop() {
        acc = Hash::node(&left, &acc);
    }
    Some(acc)
}

impl Path {
    /// Folds the path over `leaf`: the root it proves.
    pub fn root(&self, leaf: &Hash) -> Hash {
        self.steps.iter().fold(*leaf, |acc, step| match step {
            PathStep::Left(s) => Hash::node(s, &acc),
            PathStep::Right(s) => Hash::node(&acc, s),
        })
    }

    /// The directions a path for leaf `index` in a tree of `size` leaves must have, leaf end first
    /// (`true` = sibling on the left). `None` if `index >= size`.
    pub fn expected_directions(index: u64, size: u64) -> Option<Vec<bool>> {
        if index >= size {
            return None;
        }
        let (mut lo, mut hi) = (0u64, size);
        let mut dirs = Vec::new();
        while hi - lo > 1 {
            let k = split_point(hi - lo);
            if index < lo + k {
                dirs.push(false);
                hi = lo + k;
            } else {
                dirs.push(true);
                lo += k;
            }
        }
        dirs.reverse();
        Some(dirs)
    }

    /// Verifies that this path proves `leaf` at `index` in the tree of `size` leaves with `root`:
    /// both the shape (length and directions) and the hashes must match.
    pub fn verify(
        &self,
        leaf: &Hash,
        index: u64,
        size: u64,
        root: &Hash,
    ) -> Result<(), ProofError> {
        let dirs = Path::expected_directions(index, size).ok_or(ProofError::IndexOutOfRange)?;
        if dirs.len() != self.steps.len() {
            return Err(ProofError::WrongLength {
                expected: dirs.len(),
                actual: self.steps.len(),
            });
        }
        for (i, (d, s)) in dirs.iter().zip(&self.steps).enumerate() {
            if *d != matches!(s, PathStep::Left(_)) {
                return Err(ProofError::WrongDirection(i));
            }
        }
        if self.root(leaf) != *root {
            return Err(ProofError::RootMismatch);
        }
        Ok(())
    }
}

/// Why an inclusion proof failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The index is not below the tree size.
    #[error("leaf index is not below the tree size")]
    IndexOutOfRange,
    /// The path has the wrong number of steps for that index and size.
    #[error("inclusion path has {actual} steps, expected {expected}")]
    WrongLength {
        /// Steps a correct path has.
        expected: usize,
        /// Steps given.
        actual: usize,
    },
    /// Step `i` has its sibling on the wrong side for that index.
    #[error("inclusion path step {0} has its sibling on the wrong side")]
    WrongDirection(usize),
    /// The path does not lead to the root.
    #[error("inclusion path does not lead to the expected root")]
    RootMismatch,
}

/// The reference Merkle Tree Hash, written as the RFC 6962 recursion (used by tests and as a
/// cross-check for [`MerkleTree`]).
pub fn reference_root(leaves: &[Hash]) -> Option<Hash> {
    match leaves.len() {
        0 => None,
        1 => Some(leaves[0]),
        n => {
            let k = split_point(n as u64) as usize;
            Some(Hash::node(
                &reference_root(&leaves[..k])?,
                &reference_root(&leaves[k..])?,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| Hash::digest(&i.to_le_bytes())).collect()
    }

    fn tree(ls: &[Hash]) -> MerkleTree {
        let mut t = MerkleTree::new();
        for l in ls {
            t.append(*l);
        }
        t
    }

    #[test]
    fn empty_tree_has_no_root() {
        assert_eq!(MerkleTree::new().root(), Err(TreeError::Empty));
        assert_eq!(reference_root(&[]), None);
    }

    #[test]
    fn small_shapes() {
        let l = leaves(3);
        let t = tree(&l);
        assert_eq!(t.root_at(1).unwrap(), l[0]);
        assert_eq!(t.root_at(2).unwrap(), Hash::node(&l[0], &l[1]));
        assert_eq!(
            t.root().unwrap(),
            Hash::node(&Hash::node(&l[0], &l[1]), &l[2])
        );
        // Appendix A of ccf-notes: receipt for seqno 2 in a 3-leaf tree is [left: H(l0||l1)].
        assert_eq!(
            t.path(2, 3).unwrap().steps,
            vec![PathStep::Left(Hash::node(&l[0], &l[1]))]
        );
    }

    #[test]
    fn matches_reference_for_all_sizes_up_to_300() {
        let l = leaves(300);
        let t = tree(&l);
        for n in 1..=300u64 {
            assert_eq!(
                t.root_at(n).unwrap(),
                reference_root(&l[..n as usize]).unwrap()
            );
        }
    }

    #[test]
    fn ccf_worked_example_serialization() {
        // Signature at 18 with num_flushed = 16: leaves 16, 17 and one flushed root (bit 4).
        let l = leaves(18);
        let mut t = tree(&l);
        t.flush_to(16).unwrap();
        let bytes = t.serialize(16, 18).unwrap();
        assert_eq!(bytes.len(), 16 + 2 * 32 + 32);
        assert_eq!(&bytes[..8], &2u64.to_be_bytes());
        assert_eq!(&bytes[8..16], &16u64.to_be_bytes());
        let root16 = reference_root(&l[..16]).unwrap();
        assert_eq!(&bytes[80..], root16.as_bytes());
        let back = MerkleTree::deserialize(&bytes).unwrap();
        assert_eq!(
            back.root().unwrap(),
            Hash::node(&root16, &Hash::node(&l[16], &l[17]))
        );
        assert_eq!(back.root().unwrap(), reference_root(&l).unwrap());
    }

    #[test]
    fn errors_are_typed() {
        let mut t = tree(&leaves(10));
        assert_eq!(
            t.path(10, 10),
            Err(TreeError::OutOfRange {
                index: 10,
                size: 10
            })
        );
        assert_eq!(
            t.root_at(11),
            Err(TreeError::OutOfRange {
                index: 11,
                size: 10
            })
        );
        t.flush_to(5).unwrap();
        assert_eq!(
            t.leaf(3),
            Err(TreeError::Flushed {
                index: 3,
                offset: 5
            })
        );
        assert_eq!(
            t.root_at(4),
            Err(TreeError::Flushed {
                index: 4,
                offset: 5
            })
        );
        assert!(MerkleTree::deserialize(&[0u8; 15]).is_err());
        let mut bad = t.serialize(5, 10).unwrap();
        bad.push(0);
        assert!(matches!(
            MerkleTree::deserialize(&bad),
            Err(TreeDecodeError::LengthMismatch { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn inclusion_paths_verify(n in 1u64..700, seed in any::<u64>()) {
            let l = leaves(n);
            let t = tree(&l);
            let i = seed % n;
            let m = i + 1 + (seed >> 20) % (n - i);
            let root = t.root_at(m).unwrap();
            prop_assert_eq!(root, reference_root(&l[..m as usize]).unwrap());
            let p = t.path(i, m).unwrap();
            prop_assert!(p.verify(&l[i as usize], i, m, &root).is_ok());
            // A wrong leaf, a wrong index or a wrong root fails.
            let wrong = Hash::digest(b"not a leaf");
            prop_assert_eq!(p.verify(&wrong, i, m, &root), Err(ProofError::RootMismatch));
            let other_root = Hash::node(&root, &root);
            prop_assert_eq!(p.verify(&l[i as usize], i, m, &other_root), Err(ProofError::RootMismatch));
            if m > 1 {
                let j = (i + 1 + seed % (m - 1)) % m;
                prop_assert!(j != i);
                prop_assert!(p.verify(&l[i as usize], j, m, &root).is_err());
            }
            // Flipping a bit in any step fails.
            if !p.steps.is_empty() {
                let k = (seed as usize) % p.steps.len();
                let mut q = p.clone();
                q.steps[k] = match q.steps[k] {
                    PathStep::Left(mut h) => { h.0[0] ^= 1; PathStep::Left(h) }
                    PathStep::Right(mut h) => { h.0[0] ^= 1; PathStep::Right(h) }
                };
                prop_assert!(q.verify(&l[i as usize], i, m, &root).is_err());
            }
        }

        /// A trimmed tree gives the full tree's roots (at sizes past the trim), paths once
        /// handed the blocks it names, and keeps agreeing after more appends; a retraction
        /// below the trim is refused; wrong block leaves give a path that does not verify.
        #[test]
        fn trim_keeps_roots_and_paths_given_the_blocks(n in 1u64..600, t in any::<u64>(), seed in any::<u64>()) {
            let l = leaves(n);
            let full = tree(&l);
            let mut tr = full.clone();
            let cut = t % (n + 1);
            tr.trim_to(cut);
            let b = tr.trimmed();
            prop_assert!(b <= cut && cut - b < TRIM_BLOCK && b.is_multiple_of(TRIM_BLOCK));
            for m in (b + TRIM_BLOCK).max(1)..=n {
                prop_assert_eq!(tr.root_at(m).unwrap(), full.root_at(m).unwrap());
            }
            let i = seed % n;
            let m = i + 1 + (seed >> 20) % (n - i);
            let blocks: Vec<(u64, Vec<Hash>)> = tr
                .trimmed_blocks(i, m)
                .into_iter()
                .map(|s| (s, l[s as usize..(s + TRIM_BLOCK) as usize].to_vec()))
                .collect();
            prop_assert!(blocks.len() <= 2);
            let p = tr.path_from_blocks(i, m, &blocks).unwrap();
            prop_assert_eq!(&p, &full.path(i, m).unwrap());
            if i >= b && m > b {
                prop_assert_eq!(tr.path(i, m).unwrap(), p.clone());
            }
            if !blocks.is_empty() {
                let mut wrong = blocks.clone();
                wrong[0].1[(seed % TRIM_BLOCK) as usize] = Hash::digest(b"x");
                let root = full.root_at(m).unwrap();
                let q = tr.path_from_blocks(i, m, &wrong).unwrap_or_default();
                let touched = q != p;
                prop_assert!(!touched || q.verify(&l[i as usize], i, m, &root).is_err());
            }
            if b > 0 {
                prop_assert!(tr.retract_to(b - 2).is_err() || b < 2);
            }
            let mut t2 = tr.clone();
            let mut f2 = full.clone();
            for extra in 0..20u64 {
                let x = Hash::digest(&(5000 + extra).to_le_bytes());
                t2.append(x);
                f2.append(x);
            }
            prop_assert_eq!(t2.root().unwrap(), f2.root().unwrap());
            let last = t2.size() - 1;
            prop_assert_eq!(t2.path(last, t2.size()).unwrap(), f2.path(last, f2.size()).unwrap());
        }

        #[test]
        fn flush_keeps_roots_paths_and_serialization(n in 1u64..400, f in any::<u64>(), g in any::<u64>()) {
            let l = leaves(n);
            let full = tree(&l);
            let mut t = full.clone();
            let f = f % (n + 1);
            t.flush_to(f).unwrap();
            for m in f.max(1)..=n {
                prop_assert_eq!(t.root_at(m).unwrap(), full.root_at(m).unwrap());
            }
            for i in f..n {
                prop_assert_eq!(t.path(i, n).unwrap(), full.path(i, n).unwrap());
            }
            // Serialization from any retained point round-trips to the same root.
            let from = f + g % (n - f + 1);
            let bytes = t.serialize(from, n).unwrap();
            prop_assert_eq!(&bytes, &full.serialize(from, n).unwrap());
            let back = MerkleTree::deserialize(&bytes).unwrap();
            prop_assert_eq!(back.size(), n);
            if n > 0 {
                prop_assert_eq!(back.root().unwrap(), full.root().unwrap());
            }
            // Appending after a flush or a deserialize keeps agreeing with the full tree.
            let mut t2 = t.clone();
            let mut back2 = back.clone();
            let mut full2 = full.clone();
            for extra in 0..5u64 {
                let x = Hash::digest(&(1000 + extra).to_le_bytes());
                t2.append(x); back2.append(x); full2.append(x);
                prop_assert_eq!(t2.root().unwrap(), full2.root().unwrap());
                prop_assert_eq!(back2.root().unwrap(), full2.root().unwrap());
            }
        }

        #[test]
        fn retract_then_append_equals_fresh(n in 2u64..300, r in any::<u64>()) {
            let l = leaves(n);
            let mut t = tree(&l);
            let keep = r % n; // keep leaves 0..=keep
            t.retract_to(keep).unwrap();
            prop_assert_eq!(t.size(), keep + 1);
            prop_assert_eq!(t.root().unwrap(), reference_root(&l[..=keep as usize]).unwrap());
            let x = Hash::digest(b"new");
            t.append(x);
            let mut v = l[..=keep as usize].to_vec();
            v.push(x);
            prop_assert_eq!(t.root().unwrap(), reference_root(&v).unwrap());
        }

        /// A snapshot at any size a tree can give (past its trim) restores a tree with the same
        /// roots and paths, which keeps agreeing with the original as both grow; damage to a
        /// node with children held is refused.
        #[test]
        fn snapshot_restores_the_tree(n in 1u64..600, t in any::<u64>(), s in any::<u64>(), seed in any::<u64>()) {
            let l = leaves(n);
            let mut full = tree(&l);
            let cut = t % (n + 1);
            full.trim_to(cut);
            let b = full.trimmed();
            let size = b + s % (n - b + 1);
            if b > 0 {
                prop_assert!(full.snapshot(b - 1).is_err());
            }
            prop_assert!(full.snapshot(n + 1).is_err());
            let bytes = full.snapshot(size).unwrap();
            let back = MerkleTree::from_snapshot(&bytes).unwrap();
            prop_assert_eq!(back.size(), size);
            prop_assert_eq!(back.trimmed(), b);
            for m in (b + TRIM_BLOCK).max(1)..=size {
                prop_assert_eq!(back.root_at(m).unwrap(), full.root_at(m).unwrap());
            }
            let mut back2 = back.clone();
            let mut fresh = tree(&l[..size as usize]);
            for (i, x) in l[size as usize..].iter().enumerate() {
                back2.append(*x);
                fresh.append(*x);
                prop_assert_eq!(back2.root().unwrap(), full.root_at(size + i as u64 + 1).unwrap());
            }
            for extra in 0..20u64 {
                let x = Hash::digest(&(7000 + extra).to_le_bytes());
                back2.append(x);
                fresh.append(x);
            }
            prop_assert_eq!(back2.root().unwrap(), fresh.root().unwrap());
            let i = b + seed % (back2.size() - b);
            prop_assert_eq!(back2.path(i, back2.size()).unwrap(), fresh.path(i, fresh.size()).unwrap());
            // Flip a byte in the first node above height 0 whose children are held.
            let held = (1..64u32).find_map(|h| {
                let j = back.levels.get(h as usize)?.base;
                (back.node(h, j).is_some() && back.node(h - 1, 2 * j).is_some()
                    && back.node(h - 1, 2 * j + 1).is_some()).then_some((h, j))
            });
            if let Some((h, j)) = held {
                let mut at = 25;
                for k in 0..h {
                    let level = &back.levels[k as usize];
                    at += 8 + 32 * level.nodes.len();
                }
                at += 8 + 32 * (j - back.levels[h as usize].base) as usize;
                let mut bad = bytes.clone();
                bad[at + (seed % 32) as usize] ^= 1;
                prop_assert!(
                    matches!(MerkleTree::from_snapshot(&bad), Err(TreeDecodeError::Inconsistent { .. })),
                    "flipped node at height {} index {} not detected", h, j
                );
            }
        }

        #[test]
        fn from_snapshot_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), n in 0u64..80) {
            let _ = MerkleTree::from_snapshot(&bytes);
            // Truncations and extensions of a real snapshot are refused.
            let t = tree(&leaves(n));
            let good = t.snapshot(n).unwrap();
            prop_assert_eq!(MerkleTree::from_snapshot(&good).unwrap().size(), n);
            let cut = bytes.len() % good.len().max(1);
            prop_assert!(MerkleTree::from_snapshot(&good[..cut]).is_err() || cut == good.len());
            let mut longer = good.clone();
            longer.push(0);
            prop_assert!(MerkleTree::from_snapshot(&longer).is_err());
        }

        #[test]
        fn deserialize_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = MerkleTree::deserialize(&bytes);
        }
    }
}
