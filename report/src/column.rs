//! A series laid on the window's points: one `Option<f64>` per point (`None`: no sample).

use crate::query_api::Series;
use crate::window::Window;

/// Values at the window's points, `None` where the series had none.
pub type Column = Vec<Option<f64>>;

/// The series' points on the window's grid (a range query answers at exactly those times;
/// a point off the grid goes to the nearest one).
pub fn on_grid(window: &Window, series: &Series) -> Column {
    let mut column = vec![None; window.points()];
    for &(t, v) in &series.points {
        if let Some(i) = window.index(t) {
            column[i] = Some(v);
        }
    }
    column
}

/// The last value in `column[range]`.
pub fn last_in(column: &[Option<f64>], range: std::ops::Range<usize>) -> Option<f64> {
    column.get(range)?.iter().rev().find_map(|v| *v)
}

/// The last value strictly before `index`.
pub fn before(column: &[Option<f64>], index: usize) -> Option<f64> {
    last_in(column, 0..index.min(column.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_land_on_the_grid() {
        let w = Window {
            from: 100.0,
            to: 104.0,
            resolution: 1.0,
        };
        let s = Series {
            points: vec![(100.0, 1.0), (102.001, 3.0), (104.0, 4.0), (110.0, 9.0)],
            ..Series::default()
        };
        let c = on_grid(&w, &s);
        assert_eq!(c, vec![Some(1.0), None, Some(3.0), None, Some(4.0)]);
        assert_eq!(last_in(&c, 0..2), Some(1.0));
        assert_eq!(before(&c, 4), Some(3.0));
        assert_eq!(before(&c, 0), None);
        assert_eq!(last_in(&c, 3..9), None);
    }
}
