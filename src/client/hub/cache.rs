//! The device's cache of the last good hub addresses (`hubs.json` in its data dir), so a
//! device whose given nodes are gone still knows where the others are after a restart.

use super::{HUB_CACHE_FILE, HubConfig};

#[derive(serde::Serialize, serde::Deserialize)]
struct Cache {
    #[serde(rename = "tenantId")]
    tenant_id: String,
    #[serde(rename = "storeId")]
    store_id: String,
    addrs: Vec<String>,
}

pub(super) fn read_cache(config: &HubConfig) -> Vec<String> {
    let Some(dir) = &config.cache_dir else {
        return Vec::new();
    };
    let Ok(text) = std::fs::read_to_string(dir.join(HUB_CACHE_FILE)) else {
        return Vec::new();
    };
    match serde_json::from_str::<Cache>(&text) {
        Ok(cache)
            if cache.tenant_id == config.realm.tenant_id
                && cache.store_id == config.realm.store_id =>
        {
            cache.addrs
        }
        Ok(_) => Vec::new(),
        Err(err) => {
            tracing::warn!(%err, "ignoring an unreadable {HUB_CACHE_FILE}");
            Vec::new()
        }
    }
}

pub(super) fn write_cache(config: &HubConfig, addrs: &[String]) {
    let Some(dir) = &config.cache_dir else {
        return;
    };
    let cache = Cache {
        tenant_id: config.realm.tenant_id.clone(),
        store_id: config.realm.store_id.clone(),
        addrs: addrs.to_vec(),
    };
    let Ok(text) = serde_json::to_string_pretty(&cache) else {
        return;
    };
    // Write a sibling and rename: a crash leaves the old cache or the new one.
    let tmp = dir.join(format!("{HUB_CACHE_FILE}.tmp"));
    let result =
        std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, dir.join(HUB_CACHE_FILE)));
    if let Err(err) = result {
        tracing::warn!(%err, "cannot cache the hub addresses");
    }
}
