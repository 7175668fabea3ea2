//! The node's admin API under `/admin/`: the appliance administrator's
//! interface, separate from any partition.
//!
//! Decides: admin authentication (the password set at `hsm-node init
//! --admin-password`, argon2id-hashed in node.json; `lockout_attempts`
//! failures lock it for `lockout_secs`, counted in memory) and the admin
//! operations: `POST /admin/login {"password"}`, `POST /admin/zeroize
//! {"confirm":"zeroize"}`, `POST /admin/partitions/{p}/backup` and
//! `/restore` (the partition backup format of the CLI,
//! `replication::backup`), and
//! `GET /admin/audit/verify`. Without an admin password the API answers
//! `AdminDisabled`. Creating partitions and registering clients stay in the
//! CLI for now. Admin request bodies may be up to 256 MiB (restores).

use super::edge::{self, ApiError, ApiResult, Resp};
use super::Node;
use crate::audit::AuditEvent;
use crate::auth;
use crate::clock::now_secs;
use crate::replication::backup::{self, BackupError};
use hsm_api::{ErrorCode, LoginResponse, Role};
use http::{Method, StatusCode};
use serde::Deserialize;
use std::sync::Mutex;

/// The session scope of admin tokens (partition names cannot contain `/`).
const ADMIN_SCOPE: &str = "/admin";

/// Failed admin logins and the lock they cause.
#[derive(Default)]
pub struct AdminGuard {
    state: Mutex<(u32, Option<i64>)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminLogin {
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZeroizeRequest {
    /// Must be the word "zeroize": the operation cannot be undone.
    confirm: String,
}

impl Node {
    pub(super) async fn admin_request(
        &self,
        parts: &http::request::Parts,
        sub: &str,
        body: &[u8],
    ) -> ApiResult<Resp> {
        let Some(hash) = self.settings.admin_password_hash.clone() else {
            return Err(ApiError::new(
                ErrorCode::AdminDisabled,
                "the admin API is disabled: no admin password was set at `hsm-node init`",
            ));
        };
        match (&parts.method, sub) {
            (&Method::POST, "login") => self.admin_login(&hash, body).await,
            (&Method::POST, "zeroize") => {
                self.admin_session(parts)?;
                let req: ZeroizeRequest = edge::parse_json(body)?;
                if req.confirm != "zeroize" {
                    return Err(ApiError::new(
                        ErrorCode::BadParameter,
                        "zeroization destroys every key irreversibly; send {\"confirm\":\"zeroize\"}",
                    ));
                }
                let marker = self
                    .zeroize("admin API")
                    .map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
                Ok(edge::json(
                    StatusCode::OK,
                    &serde_json::json!({"zeroized": true, "time": marker.time}),
                ))
            }
            (&Method::GET, "audit/verify") => {
                self.admin_session(parts)?;
                self.flush_audit();
                let dir = self.dir.root.clone();
                let report = tokio::task::spawn_blocking(move || crate::audit::verify(&dir))
                    .await
                    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
                    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
                let body = serde_json::json!({
                    "ok": report.is_ok(),
                    "records": report.records,
                    "files": report.files,
                    "report": report.to_string(),
                });
                Ok(edge::json(StatusCode::OK, &body))
            }
            (&Method::POST, path) if path.starts_with("partitions/") => {
                self.admin_session(parts)?;
                self.admin_partition(path, body).await
            }
            (_, "login" | "zeroize") => Err(ApiError::new(ErrorCode::MethodNotAllowed, "use POST")),
            _ => Err(ApiError::new(ErrorCode::NotFound, "no such admin path")),
        }
    }

    /// `POST /admin/partitions/{p}/backup` answers the partition backup
    /// (JSON lines, the format of `hsm-node partition backup`);
    /// `POST /admin/partitions/{p}/restore` with such a backup as the body
    /// restores it into the (empty) partition, all or nothing.
    async fn admin_partition(&self, path: &str, body: &[u8]) -> ApiResult<Resp> {
        let rest = path.trim_start_matches("partitions/");
        let (p, action) = rest.split_once('/').unwrap_or((rest, ""));
        let part = self.partition(p).ok_or_else(|| {
            ApiError::new(ErrorCode::PartitionNotFound, format!("no partition `{p}`"))
        })?;
        let (store, keys) = (self.store.clone(), self.keys.clone());
        let backup_err = |e: BackupError| ApiError::new(ErrorCode::BadParameter, e.to_string());
        match action {
            "backup" => {
                let text = tokio::task::spawn_blocking(move || {
                    let mut out = Vec::new();
                    backup::write_backup(&store, &part, &keys, &mut out).map(|n| (n, out))
                })
                .await
                .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
                .map_err(backup_err)?;
                self.record(
                    AuditEvent::new("partition.backup", "ok")
                        .partition(p)
                        .detail(format!("{} objects", text.0)),
                );
                Ok(edge::with_body(
                    StatusCode::OK,
                    "application/x-ndjson",
                    text.1.into(),
                ))
            }
            "restore" => {
                let text = String::from_utf8(body.to_vec()).map_err(|_| {
                    ApiError::new(ErrorCode::BadParameter, "the backup is not UTF-8 text")
                })?;
                let pname = p.to_string();
                let n = tokio::task::spawn_blocking(move || {
                    backup::restore_backup(&store, &part, &keys, &text, "request body")
                })
                .await
                .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
                .map_err(backup_err)?;
                self.cache.clear();
                let counts = self.store.live_key_counts().unwrap_or_default();
                crate::metrics::set_keys(&pname, counts.get(&pname).copied().unwrap_or(0));
                self.record(
                    AuditEvent::new("partition.restore", "ok")
                        .partition(pname)
                        .detail(format!("{n} objects")),
                );
                Ok(edge::json(
                    StatusCode::OK,
                    &serde_json::json!({ "restored": n }),
                ))
            }
            _ => Err(ApiError::new(ErrorCode::NotFound, "no such admin path")),
        }
    }

    fn admin_session(&self, parts: &http::request::Parts) -> ApiResult<()> {
        let token = hsm_server::bearer_token(&parts.headers).ok_or_else(|| {
            ApiError::new(ErrorCode::Unauthorized, "an admin bearer token is required")
        })?;
        match self.sessions.check(token.trim()) {
            Some(s) if s.partition == ADMIN_SCOPE => Ok(()),
            _ => Err(ApiError::new(
                ErrorCode::Unauthorized,
                "the admin token is unknown or expired",
            )),
        }
    }

    async fn admin_login(&self, hash: &str, body: &[u8]) -> ApiResult<Resp> {
        let req: AdminLogin = edge::parse_json(body)?;
        let now = now_secs();
        if let Ok(g) = self.admin.state.lock() {
            if let Some(until) = g.1.filter(|u| *u > now) {
                return Err(ApiError::new(
                    ErrorCode::RoleLocked,
                    format!("the admin login is locked for {} more seconds", until - now),
                ));
            }
        }
        let hash = hash.to_string();
        let ok = tokio::task::spawn_blocking(move || auth::verify_password(&req.password, &hash))
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        let Ok(mut g) = self.admin.state.lock() else {
            return Err(ApiError::new(ErrorCode::Internal, "admin state poisoned"));
        };
        if !ok {
            g.0 += 1;
            tracing::warn!(failures = g.0, "admin login refused");
            if g.0 >= self.settings.lockout_attempts {
                *g = (0, Some(now + self.settings.lockout_secs as i64));
                return Err(ApiError::new(
                    ErrorCode::RoleLocked,
                    "wrong admin password; the admin login is now locked",
                ));
            }
            return Err(ApiError::new(
                ErrorCode::LoginFailed,
                "wrong admin password",
            ));
        }
        *g = (0, None);
        drop(g);
        let token = self.sessions.issue(ADMIN_SCOPE, Role::SecurityOfficer, "");
        tracing::info!("admin login");
        Ok(edge::json(
            StatusCode::OK,
            &LoginResponse {
                access_token: token.to_string(),
                token_type: "Bearer".into(),
                expires_in: self.sessions.ttl().as_secs(),
            },
        ))
    }
}
