//! The simulated retailer's fixed assets: its stores (several French cities) and its product
//! catalogue (120 products in 10 categories, EUR list prices). Nothing here is random.

use serde::{Deserialize, Serialize};

/// A physical store. `id` is what purchases carry as `store_id` (e.g. `store-paris-01`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStore {
    pub id: String,
    pub name: String,
    pub city: String,
}

/// A product of the catalogue. `unit_price_minor` is in minor units of the simulation's currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub category: String,
    pub unit_price_minor: i64,
}

/// The catalogue's categories, in the order used by [`crate::Shopper::affinity`].
pub const CATEGORIES: [&str; 10] = [
    "shoes",
    "clothing",
    "beauty",
    "home",
    "grocery",
    "electronics",
    "sports",
    "kids",
    "books",
    "accessories",
];

/// How often a line comes from each category for a shopper without preferences (same order as
/// [`CATEGORIES`]); a shopper's own affinity is drawn around these.
pub(crate) const CATEGORY_POPULARITY: [f64; 10] =
    [0.08, 0.16, 0.12, 0.09, 0.18, 0.06, 0.07, 0.08, 0.07, 0.09];

/// (category index, sku, name, price in euro cents).
const PRODUCTS: &[(usize, &str, &str, i64)] = &[
    (0, "SHO-001", "Canvas sneakers, white", 4990),
    (0, "SHO-002", "Road running shoes, men", 8990),
    (0, "SHO-003", "Road running shoes, women", 8990),
    (0, "SHO-004", "Leather ankle boots", 11900),
    (0, "SHO-005", "Suede loafers", 7990),
    (0, "SHO-006", "Court heels, black", 6990),
    (0, "SHO-007", "Summer sandals", 3490),
    (0, "SHO-008", "Leather derby shoes", 9900),
    (0, "SHO-009", "Rain boots", 2999),
    (0, "SHO-010", "Flip-flops", 999),
    (0, "SHO-011", "Kids' trainers", 3499),
    (0, "SHO-012", "Memory-foam insoles", 1250),
    (1, "CLO-001", "Organic cotton T-shirt", 1299),
    (1, "CLO-002", "Slim-fit jeans", 4990),
    (1, "CLO-003", "Merino crew-neck jumper", 5990),
    (1, "CLO-004", "Oxford shirt", 3990),
    (1, "CLO-005", "Wool-blend coat", 14900),
    (1, "CLO-006", "Down jacket", 11900),
    (1, "CLO-007", "Summer dress", 3990),
    (1, "CLO-008", "Chino trousers", 3990),
    (1, "CLO-009", "Socks, pack of 5", 1299),
    (1, "CLO-010", "Hoodie", 3490),
    (1, "CLO-011", "Linen shirt", 4490),
    (1, "CLO-012", "Pyjamas", 2990),
    (2, "BEA-001", "Moisturising day cream 50 ml", 1890),
    (2, "BEA-002", "Micellar water 400 ml", 699),
    (2, "BEA-003", "Eau de parfum 50 ml", 6900),
    (2, "BEA-004", "Lipstick", 1490),
    (2, "BEA-005", "Mascara", 1290),
    (2, "BEA-006", "Shampoo 250 ml", 549),
    (2, "BEA-007", "Sunscreen SPF 50", 1590),
    (2, "BEA-008", "Vitamin C serum 30 ml", 2990),
    (2, "BEA-009", "Shower gel 500 ml", 399),
    (2, "BEA-010", "Hand cream", 690),
    (2, "BEA-011", "Electric toothbrush", 5990),
    (2, "BEA-012", "Nail polish", 790),
    (3, "HOM-001", "Scented candle", 1990),
    (3, "HOM-002", "Cotton bath towel", 1499),
    (3, "HOM-003", "Duvet cover set, double", 5990),
    (3, "HOM-004", "Stoneware plates, set of 4", 2990),
    (3, "HOM-005", "Cast-iron casserole 24 cm", 8990),
    (3, "HOM-006", "Chef's knife", 3490),
    (3, "HOM-007", "Table lamp", 4490),
    (3, "HOM-008", "Cushion cover", 1290),
    (3, "HOM-009", "Storage baskets, set of 3", 2490),
    (3, "HOM-010", "Wine glasses, set of 6", 2190),
    (3, "HOM-011", "Throw blanket", 3990),
    (3, "HOM-012", "Non-stick frying pan 28 cm", 3290),
    (4, "GRO-001", "Ground coffee 250 g", 429),
    (4, "GRO-002", "Organic olive oil 75 cl", 1090),
    (4, "GRO-003", "Dark chocolate bar", 249),
    (4, "GRO-004", "Bordeaux red wine 75 cl", 899),
    (4, "GRO-005", "Champagne brut 75 cl", 3490),
    (4, "GRO-006", "Comté cheese 250 g", 599),
    (4, "GRO-007", "Earl Grey tea, 20 bags", 450),
    (4, "GRO-008", "Butter biscuits", 299),
    (4, "GRO-009", "Honey 500 g", 790),
    (4, "GRO-010", "Pasta 500 g", 189),
    (4, "GRO-011", "Sparkling water, 6 x 1 L", 390),
    (4, "GRO-012", "Foie gras 180 g", 2490),
    (5, "ELE-001", "Wireless earbuds", 7999),
    (5, "ELE-002", "Bluetooth speaker", 4999),
    (5, "ELE-003", "USB-C charger 30 W", 2499),
    (5, "ELE-004", "Smartphone 128 GB", 39900),
    (5, "ELE-005", "Tablet 10 inch", 29900),
    (5, "ELE-006", "Noise-cancelling headphones", 24900),
    (5, "ELE-007", "Smartwatch", 19900),
    (5, "ELE-008", "Power bank 10,000 mAh", 2999),
    (5, "ELE-009", "HDMI cable 2 m", 1299),
    (5, "ELE-010", "E-reader", 12999),
    (5, "ELE-011", "Laptop 14 inch", 89900),
    (5, "ELE-012", "Phone case", 1999),
    (6, "SPO-001", "Yoga mat", 2499),
    (6, "SPO-002", "Running tights", 3499),
    (6, "SPO-003", "Technical T-shirt", 1499),
    (6, "SPO-004", "Dumbbells 2 x 5 kg", 3999),
    (6, "SPO-005", "Tennis racket", 8999),
    (6, "SPO-006", "Football", 1999),
    (6, "SPO-007", "Cycling helmet", 4999),
    (6, "SPO-008", "Hiking backpack 30 L", 5999),
    (6, "SPO-009", "Water bottle", 999),
    (6, "SPO-010", "Swimming goggles", 1299),
    (6, "SPO-011", "Resistance bands", 1499),
    (6, "SPO-012", "Fleece jacket", 2999),
    (7, "KID-001", "Wooden building blocks", 2499),
    (7, "KID-002", "Plush rabbit", 1999),
    (7, "KID-003", "Baby bodysuits, pack of 3", 1999),
    (7, "KID-004", "Jigsaw puzzle 500 pieces", 1499),
    (7, "KID-005", "Colouring set", 999),
    (7, "KID-006", "Kids' raincoat", 2999),
    (7, "KID-007", "Board game", 2999),
    (7, "KID-008", "Balance bike", 6999),
    (7, "KID-009", "School backpack", 3499),
    (7, "KID-010", "Building bricks set", 4999),
    (7, "KID-011", "Doll", 2499),
    (7, "KID-012", "Baby bottle set", 2290),
    (8, "BOO-001", "Paperback novel", 890),
    (8, "BOO-002", "Hardback bestseller", 2200),
    (8, "BOO-003", "Cookbook", 2990),
    (8, "BOO-004", "Graphic novel", 1595),
    (8, "BOO-005", "Children's picture book", 1290),
    (8, "BOO-006", "Travel guide", 1990),
    (8, "BOO-007", "Manga volume", 725),
    (8, "BOO-008", "Notebook A5", 690),
    (8, "BOO-009", "Crime thriller paperback", 990),
    (8, "BOO-010", "Art book", 4500),
    (8, "BOO-011", "Wall calendar", 1490),
    (8, "BOO-012", "Crossword book", 590),
    (9, "ACC-001", "Leather belt", 3490),
    (9, "ACC-002", "Wool scarf", 2990),
    (9, "ACC-003", "Sunglasses", 5990),
    (9, "ACC-004", "Leather tote bag", 12900),
    (9, "ACC-005", "Steel watch", 14900),
    (9, "ACC-006", "Wallet", 3990),
    (9, "ACC-007", "Beanie", 1590),
    (9, "ACC-008", "Umbrella", 1990),
    (9, "ACC-009", "Silver earrings", 4490),
    (9, "ACC-010", "Leather gloves", 3990),
    (9, "ACC-011", "Cap", 1990),
    (9, "ACC-012", "City backpack", 6990),
];

/// The catalogue, priced in a currency with `minor_per_unit` minor units per major unit. The
/// list prices are euro amounts reused as nominal amounts in any currency (rounded to its
/// minor unit, never below one minor unit).
pub(crate) fn catalogue(minor_per_unit: i64) -> Vec<Product> {
    PRODUCTS
        .iter()
        .map(|&(cat, sku, name, cents)| {
            // Rounded half up: cents * minor_per_unit / 100, in integers.
            let scaled = (i128::from(cents) * i128::from(minor_per_unit) + 50) / 100;
            Product {
                sku: sku.to_string(),
                name: name.to_string(),
                category: CATEGORIES[cat].to_string(),
                unit_price_minor: i64::try_from(scaled).unwrap_or(i64::MAX).max(1),
            }
        })
        .collect()
}

/// Product indices grouped by category (same order as [`CATEGORIES`]).
pub(crate) fn by_category(products: &[Product]) -> Vec<Vec<usize>> {
    CATEGORIES
        .iter()
        .map(|c| {
            (0..products.len())
                .filter(|&i| products[i].category == *c)
                .collect()
        })
        .collect()
}

/// (slug, display name, neighbourhood): the order stores are opened in.
const STORE_SITES: &[(&str, &str, &str)] = &[
    ("paris", "Paris", "Rivoli"),
    ("lyon", "Lyon", "Part-Dieu"),
    ("marseille", "Marseille", "Vieux-Port"),
    ("paris", "Paris", "Montparnasse"),
    ("lille", "Lille", "Euralille"),
    ("bordeaux", "Bordeaux", "Sainte-Catherine"),
    ("toulouse", "Toulouse", "Capitole"),
    ("nantes", "Nantes", "Commerce"),
    ("strasbourg", "Strasbourg", "Kléber"),
    ("nice", "Nice", "Masséna"),
    ("paris", "Paris", "Bastille"),
    ("lyon", "Lyon", "Confluence"),
    ("rennes", "Rennes", "Colombier"),
    ("montpellier", "Montpellier", "Comédie"),
    ("marseille", "Marseille", "Prado"),
    ("grenoble", "Grenoble", "Victor Hugo"),
    ("paris", "Paris", "La Défense"),
    ("dijon", "Dijon", "Darcy"),
    ("angers", "Angers", "Ralliement"),
    ("reims", "Reims", "Erlon"),
];

/// `n` stores: the sites above in order, then further numbered stores cycling through the
/// same cities. Ids are `store-<city>-NN`, numbered per city.
pub(crate) fn stores(n: usize) -> Vec<SimStore> {
    let mut per_city: Vec<(&str, usize)> = Vec::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (slug, city, place) = STORE_SITES[i % STORE_SITES.len()];
        let count = match per_city.iter_mut().find(|(s, _)| *s == slug) {
            Some((_, c)) => {
                *c += 1;
                *c
            }
            None => {
                per_city.push((slug, 1));
                1
            }
        };
        let name = if i < STORE_SITES.len() {
            format!("{city} {place}")
        } else {
            format!("{city} {place} {}", i / STORE_SITES.len() + 1)
        };
        out.push(SimStore {
            id: format!("store-{slug}-{count:02}"),
            name,
            city: city.to_string(),
        });
    }
    out
}

/// How much custom a store draws when shoppers pick their home store (Paris stores are bigger).
pub(crate) fn store_weight(store: &SimStore) -> f64 {
    if store.city == "Paris" { 1.5 } else { 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_has_unique_skus_in_every_category() {
        let products = catalogue(100);
        assert_eq!(products.len(), 120);
        let mut skus: Vec<&str> = products.iter().map(|p| p.sku.as_str()).collect();
        skus.sort_unstable();
        skus.dedup();
        assert_eq!(skus.len(), products.len());
        for (cat, members) in by_category(&products).iter().enumerate() {
            assert_eq!(members.len(), 12, "{}", CATEGORIES[cat]);
        }
        assert!((CATEGORY_POPULARITY.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn prices_follow_the_currency_exponent() {
        assert_eq!(catalogue(100)[0].unit_price_minor, 4990);
        assert_eq!(catalogue(1)[0].unit_price_minor, 50);
        assert_eq!(catalogue(1000)[0].unit_price_minor, 49900);
        assert!(catalogue(1).iter().all(|p| p.unit_price_minor >= 1));
    }

    #[test]
    fn store_ids_are_unique_and_numbered_per_city() {
        let s = stores(45);
        assert_eq!(s[0].id, "store-paris-01");
        assert_eq!(s[3].id, "store-paris-02");
        let mut ids: Vec<&str> = s.iter().map(|s| s.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 45);
    }
}
