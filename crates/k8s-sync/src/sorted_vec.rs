//! Sorted Vecs kept per host or per object (the Ingresses naming a host, the files defining an
//! object, the hosts of a Secret). Most hold one element: the first insert reserves exactly one
//! slot (`Vec::insert` into an empty Vec would reserve four), later ones grow as usual.

/// Inserts at `i` (a position found by binary search).
pub fn insert_at<T>(v: &mut Vec<T>, i: usize, x: T) {
    if v.capacity() == 0 {
        v.reserve_exact(1);
    }
    v.insert(i, x);
}

/// Inserts in order unless an equal element is there; whether it was inserted.
pub fn insert<T: Ord>(v: &mut Vec<T>, x: T) -> bool {
    match v.binary_search(&x) {
        Ok(_) => false,
        Err(i) => {
            insert_at(v, i, x);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_without_duplicates_and_starts_at_capacity_one() {
        let mut v = Vec::new();
        assert!(insert(&mut v, 5));
        assert_eq!(v.capacity(), 1);
        assert!(insert(&mut v, 1));
        assert!(!insert(&mut v, 5));
        assert!(insert(&mut v, 3));
        assert_eq!(v, [1, 3, 5]);
    }
}
