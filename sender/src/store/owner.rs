//! One owner's series, compact: 16 bytes per series and 4 per label value it does not share
//! with the owner's first series.
//!
//! Most of an owner's series start with the same label values: every series of a pod with
//! its `namespace`, `pod` and `uid`, every usage series with `namespace`, `pod`, `container`
//! and `image`. The first series' label atoms are stored whole and are the owner's *prefix*;
//! each later series keeps how many leading values it shares with that prefix and stores
//! only the rest. At 100,000 pods (27 series each) that saves ~30 MB over one atom per
//! label value per series, and dropping the series' offset into the label atoms (they are
//! read in order, so the offset is a running sum) saves 8 bytes a series more.

use kube_relay_proto::SeriesId;

use super::Atom;
use crate::family::Family;

/// One stored series (16 bytes).
#[derive(Debug, Clone, Copy)]
pub(super) struct Stored {
    pub(super) value: f64,
    pub(super) id: SeriesId,
    pub(super) family: Family,
    /// Leading label values equal to the owner's prefix (the first series' values).
    shared: u8,
}

impl Stored {
    /// A series before it is placed in an owner.
    pub(super) fn new(id: SeriesId, family: Family, value: f64) -> Self {
        Stored {
            value,
            id,
            family,
            shared: 0,
        }
    }
}

/// A series' label atoms, in [`Family::label_names`] order: the shared head of the owner's
/// prefix, then its own.
#[derive(Debug, Clone, Copy)]
pub(super) struct Labels<'a> {
    shared: &'a [Atom],
    own: &'a [Atom],
}

impl<'a> Labels<'a> {
    /// The atoms, in order.
    pub(super) fn iter(self) -> impl Iterator<Item = Atom> + 'a {
        self.shared.iter().chain(self.own).copied()
    }

    /// The `i`-th atom.
    #[cfg(test)]
    pub(super) fn get(self, i: usize) -> Option<Atom> {
        self.iter().nth(i)
    }

    /// True when these are exactly `atoms`.
    pub(super) fn is(self, atoms: &[Atom]) -> bool {
        atoms.len() == self.shared.len() + self.own.len()
            && atoms.starts_with(self.shared)
            && &atoms[self.shared.len()..] == self.own
    }
}

/// The series of `series` with their labels, reading `labels` as [`Owner`] lays them out.
fn walk<'a>(
    series: &'a [Stored],
    labels: &'a [Atom],
) -> impl Iterator<Item = (&'a Stored, Labels<'a>)> + 'a {
    // The first series shares all its values: they are the prefix, and own ones follow it.
    let mut off = series.first().map_or(0, |s| usize::from(s.shared));
    series.iter().map(move |s| {
        let shared = usize::from(s.shared);
        let own = s.family.label_names().len() - shared;
        let l = Labels {
            shared: &labels[..shared],
            own: &labels[off..off + own],
        };
        off += own;
        (s, l)
    })
}

/// An owner's series and the label atoms they use (each atom held holds one reference in
/// the interner).
#[derive(Debug, Default)]
pub(super) struct Owner {
    series: Box<[Stored]>,
    labels: Box<[Atom]>,
}

impl Owner {
    /// The series with their labels.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Stored, Labels<'_>)> {
        walk(&self.series, &self.labels)
    }

    /// The series, without labels.
    pub(super) fn series(&self) -> &[Stored] {
        &self.series
    }

    /// The series, to change their values or ids.
    pub(super) fn series_mut(&mut self) -> &mut [Stored] {
        &mut self.series
    }

    /// The series `id` with its labels.
    pub(super) fn find(&self, id: SeriesId) -> Option<(&Stored, Labels<'_>)> {
        self.iter().find(|(s, _)| s.id == id)
    }

    /// Every atom held (one reference each).
    pub(super) fn atoms(&self) -> &[Atom] {
        &self.labels
    }
}

/// Builds an [`Owner`] series by series.
#[derive(Debug)]
pub(super) struct OwnerBuilder {
    series: Vec<Stored>,
    labels: Vec<Atom>,
}

impl OwnerBuilder {
    /// A builder with room for `series` series and `labels` label atoms.
    pub(super) fn with_capacity(series: usize, labels: usize) -> Self {
        OwnerBuilder {
            series: Vec::with_capacity(series),
            labels: Vec::with_capacity(labels),
        }
    }

    /// True when a series of `family` with exactly `atoms` was pushed.
    pub(super) fn contains(&self, family: Family, atoms: &[Atom]) -> bool {
        walk(&self.series, &self.labels).any(|(s, l)| s.family == family && l.is(atoms))
    }

    /// Adds a series with label atoms `atoms` (one reference each, taken by the caller);
    /// returns the references the owner does not keep (the values it shares with the
    /// prefix, held there already), for the caller to release.
    pub(super) fn push<'a>(&mut self, mut stored: Stored, atoms: &'a [Atom]) -> &'a [Atom] {
        debug_assert_eq!(atoms.len(), stored.family.label_names().len());
        let shared = match self.series.first() {
            None => atoms.len(),
            Some(first) => {
                let prefix = &self.labels[..usize::from(first.shared)];
                prefix.iter().zip(atoms).take_while(|(a, b)| a == b).count()
            }
        }
        .min(usize::from(u8::MAX));
        stored.shared = u8::try_from(shared).unwrap_or(u8::MAX);
        self.series.push(stored);
        if self.series.len() == 1 {
            self.labels.extend_from_slice(&atoms[..shared]);
        }
        self.labels.extend_from_slice(&atoms[shared..]);
        if self.series.len() == 1 {
            &[]
        } else {
            &atoms[..shared]
        }
    }

    /// The owner, without spare capacity.
    pub(super) fn build(self) -> Owner {
        Owner {
            series: self.series.into_boxed_slice(),
            labels: self.labels.into_boxed_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: &[Atom] = &[];

    #[test]
    fn a_series_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Stored>(), 16);
    }

    #[test]
    fn labels_read_back_as_pushed_and_only_unshared_ones_are_kept() {
        // kube_pod_info's 10 values, then phases and a container series sharing 3.
        let info: Vec<Atom> = (0..10).collect();
        let phase = [0, 1, 2, 50];
        let container_ready = [0, 1, 2, 60];
        let other_pod = [7, 1, 2, 70]; // shares nothing: the first value differs
        let mut b = OwnerBuilder::with_capacity(4, 22);
        assert_eq!(b.push(Stored::new(1, Family::PodInfo, 1.0), &info), NONE);
        assert_eq!(
            b.push(Stored::new(2, Family::PodStatusPhase, 0.0), &phase),
            &[0, 1, 2]
        );
        assert_eq!(
            b.push(
                Stored::new(3, Family::PodContainerStatusReady, 1.0),
                &container_ready
            ),
            &[0, 1, 2]
        );
        assert_eq!(
            b.push(Stored::new(4, Family::PodStatusPhase, 1.0), &other_pod),
            NONE
        );
        assert!(b.contains(Family::PodStatusPhase, &phase));
        assert!(!b.contains(Family::PodStatusReady, &phase));
        assert!(!b.contains(Family::PodStatusPhase, &[0, 1, 2, 51]));
        let owner = b.build();
        assert_eq!(owner.atoms().len(), 10 + 1 + 1 + 4);
        let read: Vec<(SeriesId, Vec<Atom>)> = owner
            .iter()
            .map(|(s, l)| (s.id, l.iter().collect()))
            .collect();
        assert_eq!(
            read,
            [
                (1, info.clone()),
                (2, phase.to_vec()),
                (3, container_ready.to_vec()),
                (4, other_pod.to_vec()),
            ]
        );
        let (s, l) = owner.find(3).expect("series 3");
        assert_eq!((s.id, l.get(3)), (3, Some(60)));
        assert!(l.is(&container_ready) && !l.is(&phase) && !l.is(&[0, 1, 2]));
    }

    #[test]
    fn series_without_labels_share_nothing_and_need_no_atoms() {
        let mut b = OwnerBuilder::with_capacity(2, 1);
        assert_eq!(
            b.push(Stored::new(1, Family::SenderReconnects, 3.0), &[]),
            NONE
        );
        assert_eq!(
            b.push(Stored::new(2, Family::SenderDroppedUpdates, 1.0), &[9]),
            NONE
        );
        let owner = b.build();
        let read: Vec<Vec<Atom>> = owner.iter().map(|(_, l)| l.iter().collect()).collect();
        assert_eq!(read, [vec![], vec![9]]);
    }
}
