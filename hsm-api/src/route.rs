//! The paths of the dialect, parsed and built in one place.
//!
//! A server turns `(method, path)` into a [`Route`] with [`Route::parse`];
//! the client builds paths with [`Route::path`]. Both sides therefore agree
//! on every path by construction. Paths here are relative to a base: the
//! proxy's root, or a node's `/partitions/{p}`.

use http::Method;

/// Operations on one key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyOp {
    Sign,
    Verify,
    Encrypt,
    Decrypt,
    WrapKey,
    UnwrapKey,
    Mac,
    VerifyMac,
    Derive,
}

impl KeyOp {
    pub const ALL: &'static [KeyOp] = &[
        KeyOp::Sign,
        KeyOp::Verify,
        KeyOp::Encrypt,
        KeyOp::Decrypt,
        KeyOp::WrapKey,
        KeyOp::UnwrapKey,
        KeyOp::Mac,
        KeyOp::VerifyMac,
        KeyOp::Derive,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            KeyOp::Sign => "sign",
            KeyOp::Verify => "verify",
            KeyOp::Encrypt => "encrypt",
            KeyOp::Decrypt => "decrypt",
            KeyOp::WrapKey => "wrapkey",
            KeyOp::UnwrapKey => "unwrapkey",
            KeyOp::Mac => "mac",
            KeyOp::VerifyMac => "verifymac",
            KeyOp::Derive => "derive",
        }
    }
    fn parse(s: &str) -> Option<KeyOp> {
        KeyOp::ALL.iter().copied().find(|op| op.as_str() == s)
    }
}

/// Every request the dialect knows. Names and versions are as sent; the
/// server validates them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Login,
    /// Ends the session of the bearer token it carries.
    Logout,
    Health,
    Metrics,
    Rng,
    ListKeys,
    CreateKey {
        name: String,
    },
    ImportKey {
        name: String,
    },
    /// `version` is `None` for the current version (`GET /keys/{name}` or
    /// `/keys/{name}/`, which the SDK sends).
    GetKey {
        name: String,
        version: Option<String>,
    },
    ListVersions {
        name: String,
    },
    UpdateKey {
        name: String,
        version: Option<String>,
    },
    DeleteKey {
        name: String,
    },
    BackupKey {
        name: String,
    },
    RestoreKey,
    RotateKey {
        name: String,
    },
    ListDeleted,
    GetDeleted {
        name: String,
    },
    RecoverDeleted {
        name: String,
    },
    PurgeDeleted {
        name: String,
    },
    Operation {
        name: String,
        version: Option<String>,
        op: KeyOp,
    },
    /// Member protocol (nodes only): the inventory's summary hash and count.
    Inventory,
    /// Member protocol: every bucket's hash and count.
    InventoryBuckets,
    /// Member protocol: the entries of one bucket (paged).
    InventoryBucket {
        bucket: u8,
    },
    /// Member protocol: the 256 slice hashes of one bucket
    /// ([`crate::InventorySlices`]).
    InventorySlices {
        bucket: u8,
    },
    /// Member protocol: the entries of one slice of one bucket (one page).
    InventorySlice {
        bucket: u8,
        slice: u8,
    },
    /// Member protocol: export a key object as a clone blob.
    CloneExport,
    /// Member protocol: import a clone blob.
    CloneImport,
    /// Member protocol: withdraw a version its create could not replicate.
    CloneWithdraw,
    /// Member protocol: commit a pending version once it is durable on
    /// `min_replicas` members ([`crate::CommitRequest`]).
    CloneCommit,
    /// Member protocol: this member's sync state ([`crate::SyncState`]).
    SyncState,
    /// Member protocol: a change to the sync state — a round's lease, its
    /// commit, a missed change ([`crate::SyncRequest`]).
    Sync,
}

/// Why a path did not route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    MethodNotAllowed,
}

impl Route {
    /// Parses a path (without query string) relative to the base.
    pub fn parse(method: &Method, path: &str) -> Result<Route, RouteError> {
        let path = path.strip_prefix('/').unwrap_or(path);
        let mut segs: Vec<&str> = path.split('/').collect();
        // One trailing slash is tolerated everywhere (the SDK sends
        // `GET /keys/{name}/`); an empty segment elsewhere is not a route.
        if segs.len() > 1 && segs.last() == Some(&"") {
            segs.pop();
        }
        // An empty version segment (`/keys/{name}//sign`, which generated
        // Key Vault clients send for "current version") is the only empty
        // segment that routes.
        let empty_version_ok = segs.len() == 4 && segs[0] == "keys";
        let bad_empty = segs
            .iter()
            .enumerate()
            .any(|(i, s)| s.is_empty() && !(empty_version_ok && i == 2));
        if bad_empty {
            return Err(RouteError::NotFound);
        }
        let m = method;
        let s = |x: &str| x.to_string();
        use RouteError::MethodNotAllowed as Mna;
        let route = match segs.as_slice() {
            ["login"] => one(m, Method::POST, Route::Login)?,
            ["logout"] => one(m, Method::POST, Route::Logout)?,
            ["health"] => one(m, Method::GET, Route::Health)?,
            ["metrics"] => one(m, Method::GET, Route::Metrics)?,
            ["rng"] => one(m, Method::POST, Route::Rng)?,
            ["keys"] => one(m, Method::GET, Route::ListKeys)?,
            ["keys", "restore"] if m == Method::POST => Route::RestoreKey,
            ["keys", name] => match *m {
                Method::GET => Route::GetKey {
                    name: s(name),
                    version: None,
                },
                Method::PUT => Route::ImportKey { name: s(name) },
                Method::DELETE => Route::DeleteKey { name: s(name) },
                Method::PATCH => Route::UpdateKey {
                    name: s(name),
                    version: None,
                },
                _ => return Err(Mna),
            },
            ["keys", name, "create"] if m == Method::POST => Route::CreateKey { name: s(name) },
            ["keys", name, "backup"] if m == Method::POST => Route::BackupKey { name: s(name) },
            ["keys", name, "rotate"] if m == Method::POST => Route::RotateKey { name: s(name) },
            ["keys", name, "versions"] => {
                one(m, Method::GET, Route::ListVersions { name: s(name) })?
            }
            ["keys", name, version] => match *m {
                Method::GET => Route::GetKey {
                    name: s(name),
                    version: Some(s(version)),
                },
                Method::PATCH => Route::UpdateKey {
                    name: s(name),
                    version: Some(s(version)),
                },
                _ => return Err(Mna),
            },
            ["keys", name, version, op] => match KeyOp::parse(op) {
                Some(op) if m == Method::POST => Route::Operation {
                    name: s(name),
                    version: (!version.is_empty()).then(|| s(version)),
                    op,
                },
                Some(_) => return Err(Mna),
                None => return Err(RouteError::NotFound),
            },
            ["inventory"] => one(m, Method::GET, Route::Inventory)?,
            ["inventory", "buckets"] => one(m, Method::GET, Route::InventoryBuckets)?,
            ["inventory", "buckets", b] => match b.parse::<u8>() {
                Ok(bucket) => one(m, Method::GET, Route::InventoryBucket { bucket })?,
                Err(_) => return Err(RouteError::NotFound),
            },
            ["inventory", "buckets", b, "slices"] => match b.parse::<u8>() {
                Ok(bucket) => one(m, Method::GET, Route::InventorySlices { bucket })?,
                Err(_) => return Err(RouteError::NotFound),
            },
            ["inventory", "buckets", b, "slices", s] => match (b.parse::<u8>(), s.parse::<u8>()) {
                (Ok(bucket), Ok(slice)) => {
                    one(m, Method::GET, Route::InventorySlice { bucket, slice })?
                }
                _ => return Err(RouteError::NotFound),
            },
            ["clone", "export"] => one(m, Method::POST, Route::CloneExport)?,
            ["clone", "import"] => one(m, Method::POST, Route::CloneImport)?,
            ["clone", "withdraw"] => one(m, Method::POST, Route::CloneWithdraw)?,
            ["clone", "commit"] => one(m, Method::POST, Route::CloneCommit)?,
            ["sync"] => match *m {
                Method::GET => Route::SyncState,
                Method::POST => Route::Sync,
                _ => return Err(Mna),
            },
            ["deletedkeys"] => one(m, Method::GET, Route::ListDeleted)?,
            ["deletedkeys", name] => match *m {
                Method::GET => Route::GetDeleted { name: s(name) },
                Method::DELETE => Route::PurgeDeleted { name: s(name) },
                _ => return Err(Mna),
            },
            ["deletedkeys", name, "recover"] => {
                one(m, Method::POST, Route::RecoverDeleted { name: s(name) })?
            }
            _ => return Err(RouteError::NotFound),
        };
        Ok(route)
    }

    /// The path of this route relative to the base, starting with `/`.
    pub fn path(&self) -> String {
        let ver = |v: &Option<String>| v.as_deref().map(|v| format!("/{v}")).unwrap_or_default();
        match self {
            Route::Login => "/login".into(),
            Route::Logout => "/logout".into(),
            Route::Health => "/health".into(),
            Route::Metrics => "/metrics".into(),
            Route::Rng => "/rng".into(),
            Route::ListKeys => "/keys".into(),
            Route::CreateKey { name } => format!("/keys/{name}/create"),
            Route::ImportKey { name } | Route::DeleteKey { name } => format!("/keys/{name}"),
            Route::GetKey { name, version } | Route::UpdateKey { name, version } => {
                format!("/keys/{name}{}", ver(version))
            }
            Route::ListVersions { name } => format!("/keys/{name}/versions"),
            Route::BackupKey { name } => format!("/keys/{name}/backup"),
            Route::RestoreKey => "/keys/restore".into(),
            Route::RotateKey { name } => format!("/keys/{name}/rotate"),
            Route::ListDeleted => "/deletedkeys".into(),
            Route::GetDeleted { name } | Route::PurgeDeleted { name } => {
                format!("/deletedkeys/{name}")
            }
            Route::RecoverDeleted { name } => format!("/deletedkeys/{name}/recover"),
            Route::Inventory => "/inventory".into(),
            Route::InventoryBuckets => "/inventory/buckets".into(),
            Route::InventoryBucket { bucket } => format!("/inventory/buckets/{bucket}"),
            Route::InventorySlices { bucket } => format!("/inventory/buckets/{bucket}/slices"),
            Route::InventorySlice { bucket, slice } => {
                format!("/inventory/buckets/{bucket}/slices/{slice}")
            }
            Route::CloneExport => "/clone/export".into(),
            Route::CloneImport => "/clone/import".into(),
            Route::CloneWithdraw => "/clone/withdraw".into(),
            Route::CloneCommit => "/clone/commit".into(),
            Route::SyncState | Route::Sync => "/sync".into(),
            Route::Operation { name, version, op } => {
                // The current version is an empty segment, as Key Vault has it.
                let v = version.as_deref().unwrap_or("");
                format!("/keys/{name}/{v}/{}", op.as_str())
            }
        }
    }

    /// A short stable name for metrics labels and logs (`sign`, `create`…).
    pub fn label(&self) -> &'static str {
        match self {
            Route::Login => "login",
            Route::Logout => "logout",
            Route::Health => "health",
            Route::Metrics => "metrics",
            Route::Rng => "rng",
            Route::ListKeys => "list",
            Route::CreateKey { .. } => "create",
            Route::ImportKey { .. } => "import",
            Route::GetKey { .. } => "get",
            Route::ListVersions { .. } => "versions",
            Route::UpdateKey { .. } => "update",
            Route::DeleteKey { .. } => "delete",
            Route::BackupKey { .. } => "backup",
            Route::RestoreKey => "restore",
            Route::RotateKey { .. } => "rotate",
            Route::ListDeleted => "list_deleted",
            Route::GetDeleted { .. } => "get_deleted",
            Route::RecoverDeleted { .. } => "recover",
            Route::PurgeDeleted { .. } => "purge",
            Route::Operation { op, .. } => op.as_str(),
            Route::Inventory => "inventory",
            Route::InventoryBuckets => "inventory_buckets",
            Route::InventoryBucket { .. } => "inventory_bucket",
            Route::InventorySlices { .. } => "inventory_slices",
            Route::InventorySlice { .. } => "inventory_slice",
            Route::CloneExport => "clone_export",
            Route::CloneImport => "clone_import",
            Route::CloneWithdraw => "clone_withdraw",
            Route::CloneCommit => "clone_commit",
            Route::SyncState => "sync_state",
            Route::Sync => "sync",
        }
    }

    /// The method of this route.
    pub fn method(&self) -> Method {
        match self {
            Route::Health | Route::Metrics | Route::ListKeys | Route::GetKey { .. } => Method::GET,
            Route::Inventory
            | Route::InventoryBuckets
            | Route::InventoryBucket { .. }
            | Route::InventorySlices { .. }
            | Route::InventorySlice { .. }
            | Route::SyncState => Method::GET,
            Route::ListVersions { .. } | Route::ListDeleted | Route::GetDeleted { .. } => {
                Method::GET
            }
            Route::ImportKey { .. } => Method::PUT,
            Route::UpdateKey { .. } => Method::PATCH,
            Route::DeleteKey { .. } | Route::PurgeDeleted { .. } => Method::DELETE,
            _ => Method::POST,
        }
    }
}

fn one(m: &Method, want: Method, r: Route) -> Result<Route, RouteError> {
    if *m == want {
        Ok(r)
    } else {
        Err(RouteError::MethodNotAllowed)
    }
}

/// Parses the query parameters the dialect uses. Unknown parameters
/// (`api-version` among them) are ignored, as Key Vault clients send several.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub maxresults: Option<u32>,
    pub skiptoken: Option<String>,
}

impl ListQuery {
    pub fn parse(query: Option<&str>) -> Result<ListQuery, String> {
        let mut q = ListQuery::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "maxresults" => {
                    let n: u32 = v
                        .parse()
                        .map_err(|_| format!("maxresults `{v}` is not a number"))?;
                    if !(1..=25).contains(&n) {
                        return Err(format!("maxresults must be 1 to 25, got {n}"));
                    }
                    q.maxresults = Some(n);
                }
                "$skiptoken" | "%24skiptoken" => q.skiptoken = Some(v.to_string()),
                _ => {}
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_routes() -> Vec<Route> {
        let n = || "k1".to_string();
        let v = || Some("0123456789abcdef0123456789abcdef".to_string());
        let mut r = vec![
            Route::Login,
            Route::Logout,
            Route::Health,
            Route::Metrics,
            Route::Rng,
            Route::ListKeys,
            Route::CreateKey { name: n() },
            Route::ImportKey { name: n() },
            Route::GetKey {
                name: n(),
                version: None,
            },
            Route::GetKey {
                name: n(),
                version: v(),
            },
            Route::ListVersions { name: n() },
            Route::UpdateKey {
                name: n(),
                version: v(),
            },
            Route::DeleteKey { name: n() },
            Route::BackupKey { name: n() },
            Route::RestoreKey,
            Route::RotateKey { name: n() },
            Route::ListDeleted,
            Route::GetDeleted { name: n() },
            Route::RecoverDeleted { name: n() },
            Route::PurgeDeleted { name: n() },
            Route::Inventory,
            Route::InventoryBuckets,
            Route::InventoryBucket { bucket: 0 },
            Route::InventoryBucket { bucket: 255 },
            Route::InventorySlices { bucket: 7 },
            Route::InventorySlice {
                bucket: 255,
                slice: 0,
            },
            Route::CloneExport,
            Route::CloneImport,
            Route::CloneWithdraw,
            Route::CloneCommit,
            Route::SyncState,
            Route::Sync,
        ];
        for op in KeyOp::ALL {
            r.push(Route::Operation {
                name: n(),
                version: v(),
                op: *op,
            });
            r.push(Route::Operation {
                name: n(),
                version: None,
                op: *op,
            });
        }
        r
    }

    #[test]
    fn every_route_parses_back_from_its_path() {
        for r in all_routes() {
            assert_eq!(Route::parse(&r.method(), &r.path()), Ok(r.clone()), "{r:?}");
        }
    }

    #[test]
    fn sdk_trailing_slash_is_current_version() {
        assert_eq!(
            Route::parse(&Method::GET, "/keys/k1/"),
            Ok(Route::GetKey {
                name: "k1".into(),
                version: None
            })
        );
    }

    #[test]
    fn wrong_method_and_unknown_paths() {
        assert_eq!(
            Route::parse(&Method::DELETE, "/login"),
            Err(RouteError::MethodNotAllowed)
        );
        assert_eq!(
            Route::parse(&Method::GET, "/keys/a/b/c/d"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            Route::parse(&Method::POST, "/keys/a/v/frobnicate"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            Route::parse(&Method::GET, "/keys//x"),
            Err(RouteError::NotFound)
        );
    }

    #[test]
    fn list_query_bounds() {
        assert_eq!(
            ListQuery::parse(Some("api-version=7.4&maxresults=5")).map(|q| q.maxresults),
            Ok(Some(5))
        );
        assert!(ListQuery::parse(Some("maxresults=0")).is_err());
        assert!(ListQuery::parse(Some("maxresults=x")).is_err());
    }
}
