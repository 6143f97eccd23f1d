//! The order-independent checksum of a partition's live set.
//!
//! Each live record contributes `fnv1a64(id ++ [0] ++ version.to_le_bytes())`; the
//! checksum is the wrapping sum of the contributions, so adding or removing a record is one
//! addition or subtraction, and server and device compute it the same way whatever order
//! they hold records in.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Returns one record's contribution to its partition's checksum.
pub fn record_hash(id: &str, version: u64) -> u64 {
    let mut hash = FNV_OFFSET;
    for byte in id.as_bytes().iter().chain(std::iter::once(&0u8)).chain(version.to_le_bytes().iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// An order-independent checksum being accumulated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checksum(pub u64);

impl Checksum {
    /// Adds a live record.
    pub fn add(&mut self, id: &str, version: u64) {
        self.0 = self.0.wrapping_add(record_hash(id, version));
    }

    /// Removes a record that was live at `version`.
    pub fn remove(&mut self, id: &str, version: u64) {
        self.0 = self.0.wrapping_sub(record_hash(id, version));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_order_independent_and_reversible() {
        let mut a = Checksum::default();
        a.add("x", 1);
        a.add("y", 2);
        let mut b = Checksum::default();
        b.add("y", 2);
        b.add("x", 1);
        assert_eq!(a, b);
        a.remove("x", 1);
        let mut c = Checksum::default();
        c.add("y", 2);
        assert_eq!(a, c);
        assert_ne!(record_hash("x", 1), record_hash("x", 2));
    }
}
