//! Points, polygons and distances (pure): which municipality serves a point,
//! whether a routing rule's area holds it, how far apart two reports are.

use serde::{Deserialize, Serialize};

/// Mean Earth radius in metres.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A point, WGS84 degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub lat: f64,
    pub lon: f64,
}

/// Great-circle distance in metres.
pub fn distance_m(a: Point, b: Point) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

/// The latitude/longitude box around `p` that holds every point within `radius_m`.
pub fn bounding_box(p: Point, radius_m: f64) -> (f64, f64, f64, f64) {
    let dlat = (radius_m / EARTH_RADIUS_M).to_degrees();
    let cos = p.lat.to_radians().cos().abs().max(1e-6);
    let dlon = (dlat / cos).min(180.0);
    (p.lat - dlat, p.lat + dlat, p.lon - dlon, p.lon + dlon)
}

/// A municipality's service area.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceArea {
    pub municipality_code: String,
    pub name_ar: String,
    pub name_en: String,
    /// Three to five letters that start its tracking numbers, e.g. `RUH`.
    pub tracking_prefix: String,
    /// IANA zone, for the year in tracking numbers.
    pub time_zone: String,
    /// `[latitude, longitude]` vertices; closed implicitly.
    pub polygon: Vec<[f64; 2]>,
}

impl ServiceArea {
    /// Whether `p` lies inside the area.
    pub fn contains(&self, p: Point) -> bool {
        polygon_contains(&self.polygon, p)
    }
}

/// Whether `p` lies inside a polygon of `[latitude, longitude]` vertices (ray
/// casting; points exactly on an edge may fall either way, which is fine for
/// administrative areas).
pub fn polygon_contains(poly: &[[f64; 2]], p: Point) -> bool {
    if poly.len() < 3 {
        return false;
    }
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (yi, xi) = (poly[i][0], poly[i][1]);
        let (yj, xj) = (poly[j][0], poly[j][1]);
        if (yi > p.lat) != (yj > p.lat) && p.lon < (xj - xi) * (p.lat - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    fn riyadh_box() -> ServiceArea {
        ServiceArea {
            municipality_code: "RIYADH".into(),
            name_ar: "أمانة منطقة الرياض".into(),
            name_en: "Riyadh".into(),
            tracking_prefix: "RUH".into(),
            time_zone: "Asia/Riyadh".into(),
            polygon: vec![
                [24.30, 46.40],
                [24.30, 47.10],
                [25.10, 47.10],
                [25.10, 46.40],
            ],
        }
    }

    #[test]
    fn points_inside_and_outside_the_area() {
        let area = riyadh_box();
        assert!(area.contains(Point {
            lat: 24.7136,
            lon: 46.6753
        }));
        assert!(
            !area.contains(Point {
                lat: 21.4858,
                lon: 39.1925
            }),
            "Jeddah"
        );
    }

    #[test]
    fn distances_are_in_metres() {
        let a = Point {
            lat: 24.7136,
            lon: 46.6753,
        };
        let b = Point {
            lat: 24.7136 + 0.002,
            lon: 46.6753,
        };
        let d = distance_m(a, b);
        assert!((d - 222.4).abs() < 1.0, "{d}");
        let (lat_min, lat_max, lon_min, lon_max) = bounding_box(a, 250.0);
        assert!(lat_min < a.lat && a.lat < lat_max && lon_min < a.lon && a.lon < lon_max);
        assert!(
            distance_m(
                a,
                Point {
                    lat: lat_max,
                    lon: a.lon
                }
            ) <= 250.5
        );
    }
}
