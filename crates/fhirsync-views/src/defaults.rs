//! The ViewDefinitions shipped for common Epic R4 resources (`views/*.json`, embedded).

use crate::View;

/// File name and JSON text of every default view.
pub(crate) const DEFAULT_VIEW_FILES: [(&str, &str); 0] = [];

/// The views shipped for the common Epic resources.
pub fn default_views() -> Vec<View> {
    DEFAULT_VIEW_FILES
        .iter()
        .map(|(file, text)| {
            let json: serde_json::Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("embedded view {file} is not JSON: {e}"));
            View::from_json(&json).unwrap_or_else(|e| panic!("embedded view {file} is invalid: {e}"))
        })
        .collect()
}
