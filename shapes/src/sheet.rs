//! Contact sheets: images tiled in a grid, for examples' grids and strips.

use image::{Rgb, RgbImage};

/// Colour of the padding between and around the tiles of a [`contact_sheet`] (mid grey, so
/// it stands out against both black and white backgrounds).
pub const SHEET_PADDING_COLOUR: [u8; 3] = [128, 128, 128];

/// Tiles `images` row by row into a grid of `columns` columns (0 is treated as 1) with
/// `padding` pixels of [`SHEET_PADDING_COLOUR`] between and around the tiles. Every cell is
/// as large as the largest image; smaller images sit in their cell's top-left corner.
/// An empty input gives a `padding` x `padding` (at least 1 x 1) sheet of padding.
///
/// ```
/// use unclip_shapes::{contact_sheet, Dataset, Split};
///
/// let tiles: Vec<_> = Dataset::new(1, Split::Train).take(6).map(|e| e.scene.render(32)).collect();
/// let sheet = contact_sheet(&tiles, 3, 2);
/// assert_eq!(sheet.dimensions(), (3 * 32 + 4 * 2, 2 * 32 + 3 * 2));
/// ```
pub fn contact_sheet(images: &[RgbImage], columns: usize, padding: u32) -> RgbImage {
    let pad = Rgb(SHEET_PADDING_COLOUR);
    if images.is_empty() {
        let side = padding.max(1);
        return RgbImage::from_pixel(side, side, pad);
    }
    let columns = columns.max(1).min(images.len());
    let rows = images.len().div_ceil(columns);
    let cell_w = images.iter().map(|i| i.width()).max().unwrap_or(0);
    let cell_h = images.iter().map(|i| i.height()).max().unwrap_or(0);
    let width = columns as u32 * cell_w + (columns as u32 + 1) * padding;
    let height = rows as u32 * cell_h + (rows as u32 + 1) * padding;
    let mut sheet = RgbImage::from_pixel(width.max(1), height.max(1), pad);
    for (k, img) in images.iter().enumerate() {
        let x0 = padding + (k % columns) as u32 * (cell_w + padding);
        let y0 = padding + (k / columns) as u32 * (cell_h + padding);
        for (x, y, px) in img.enumerate_pixels() {
            sheet.put_pixel(x0 + x, y0 + y, *px);
        }
    }
    sheet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_placement() {
        let a = RgbImage::from_pixel(4, 4, Rgb([255, 0, 0]));
        let b = RgbImage::from_pixel(2, 3, Rgb([0, 255, 0]));
        let sheet = contact_sheet(&[a.clone(), b, a], 2, 1);
        assert_eq!(sheet.dimensions(), (2 * 4 + 3, 2 * 4 + 3));
        assert_eq!(sheet.get_pixel(0, 0).0, SHEET_PADDING_COLOUR);
        assert_eq!(sheet.get_pixel(1, 1).0, [255, 0, 0]);
        assert_eq!(sheet.get_pixel(6, 1).0, [0, 255, 0]);
        assert_eq!(sheet.get_pixel(8, 1).0, SHEET_PADDING_COLOUR); // outside the 2-wide tile
        assert_eq!(sheet.get_pixel(1, 6).0, [255, 0, 0]);
        assert_eq!(sheet.get_pixel(6, 6).0, SHEET_PADDING_COLOUR); // empty last cell
    }

    #[test]
    fn strips_and_degenerate_inputs() {
        let a = RgbImage::from_pixel(8, 8, Rgb([1, 2, 3]));
        let strip = contact_sheet(&[a.clone(), a.clone(), a.clone()], 10, 0);
        assert_eq!(strip.dimensions(), (24, 8));
        assert_eq!(
            contact_sheet(std::slice::from_ref(&a), 0, 2).dimensions(),
            (12, 12)
        );
        assert_eq!(contact_sheet(&[], 3, 0).dimensions(), (1, 1));
    }
}
