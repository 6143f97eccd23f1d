//! Devices (client ids): `GET /v1/admin/devices` (filtered, paged),
//! `GET /v1/admin/devices/{client_id}` (registry entry, live connections and per-partition
//! sync state), and the device's operator commands: `POST` and `GET
//! /v1/admin/devices/{client_id}/commands`. What the commands do is
//! [`crate::devices`]'; this file only maps HTTP to it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody, blocking};
use super::page::{Page, PageQuery, encode_cursor};
use super::{AdminAccess, AdminState, ViewerAccess};
use crate::devices::{DeviceError, DeviceManagement};
use crate::storage::{
    CommandState, DeviceCommandKind, DeviceFilter, DeviceState, PartitionName, Store, StoredCommand, StoredDevice,
};

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_devices))
        .routes(routes!(get_device))
        .routes(routes!(send_command, list_commands))
}

impl From<DeviceError> for ApiError {
    fn from(error: DeviceError) -> Self {
        Self::of_class(error.class(), error.to_string())
    }
}

/// A device's state, as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum DeviceStateName {
    Active,
    Locked,
    Wiped,
}

impl From<DeviceState> for DeviceStateName {
    fn from(state: DeviceState) -> Self {
        match state {
            DeviceState::Active => DeviceStateName::Active,
            DeviceState::Locked => DeviceStateName::Locked,
            DeviceState::Wiped => DeviceStateName::Wiped,
        }
    }
}

impl From<DeviceStateName> for DeviceState {
    fn from(state: DeviceStateName) -> Self {
        match state {
            DeviceStateName::Active => DeviceState::Active,
            DeviceStateName::Locked => DeviceState::Locked,
            DeviceStateName::Wiped => DeviceState::Wiped,
        }
    }
}

/// A registered device (one app install).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DeviceInfo {
    client_id: String,
    user_id: String,
    platform: String,
    app_version: String,
    model: String,
    state: DeviceStateName,
    /// When it registered, Unix milliseconds.
    first_seen_ms: i64,
    /// When it was last seen (a login or any frame), Unix milliseconds.
    last_seen_ms: i64,
}

impl From<StoredDevice> for DeviceInfo {
    fn from(device: StoredDevice) -> Self {
        Self {
            client_id: device.client_id,
            user_id: device.user_id,
            platform: device.platform,
            app_version: device.app_version,
            model: device.model,
            state: device.state.into(),
            first_seen_ms: device.created_ms,
            last_seen_ms: device.last_seen_ms,
        }
    }
}

/// The filters of a device listing; absent ones do not filter.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DeviceListQuery {
    /// Only this user's devices.
    user: Option<String>,
    /// Only devices in this state.
    state: Option<DeviceStateName>,
    /// Only devices of this platform (as they report it, e.g. `ios`).
    platform: Option<String>,
    /// Only devices last seen before this Unix millisecond.
    last_seen_before: Option<i64>,
    /// Only devices last seen after this Unix millisecond.
    last_seen_after: Option<i64>,
}

/// A subscribed partition of a device: where the device is and how far behind.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DevicePartition {
    source: String,
    key: String,
    /// The device's last acked cursor.
    cursor: u64,
    /// The partition's head sequence.
    head: u64,
    /// Changes the device does not hold yet (head - cursor).
    lag_changes: u64,
    /// Milliseconds since the first change the device does not hold committed (0 when
    /// caught up; absent when its commit time is unknown, e.g. it committed before the
    /// server started).
    #[serde(skip_serializing_if = "Option::is_none")]
    lag_ms: Option<u64>,
    /// True when `lag_ms` is a lower bound (older commit times were forgotten).
    #[serde(default)]
    lag_ms_at_least: bool,
    /// The device's mutations of this partition waiting for their outcome.
    pending_mutations: u64,
}

/// A device with its live state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DeviceDetail {
    #[serde(flatten)]
    device: DeviceInfo,
    /// Open connections of the device on this node.
    live_connections: u64,
    /// Partitions the device has acked, by source and key.
    partitions: Vec<DevicePartition>,
    /// Mutations of the device waiting for their outcome, in all partitions.
    pending_mutations: u64,
}

/// What an operator asks a device to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CommandKindName {
    /// Refuse the device's logins until unlocked; the device locks the app.
    Lock,
    /// Let a locked device log in again (server-side only).
    Unlock,
    /// The device deletes its local data and offline queue, then logs out.
    Wipe,
    /// The device forgets its session token and logs out.
    Logout,
    /// The device drops its local partitions and syncs them again from cursor 0.
    Resync,
}

impl From<CommandKindName> for DeviceCommandKind {
    fn from(kind: CommandKindName) -> Self {
        match kind {
            CommandKindName::Lock => DeviceCommandKind::Lock,
            CommandKindName::Unlock => DeviceCommandKind::Unlock,
            CommandKindName::Wipe => DeviceCommandKind::Wipe,
            CommandKindName::Logout => DeviceCommandKind::Logout,
            CommandKindName::Resync => DeviceCommandKind::Resync,
        }
    }
}

impl From<DeviceCommandKind> for CommandKindName {
    fn from(kind: DeviceCommandKind) -> Self {
        match kind {
            DeviceCommandKind::Lock => CommandKindName::Lock,
            DeviceCommandKind::Unlock => CommandKindName::Unlock,
            DeviceCommandKind::Wipe => CommandKindName::Wipe,
            DeviceCommandKind::Logout => CommandKindName::Logout,
            DeviceCommandKind::Resync => CommandKindName::Resync,
        }
    }
}

/// Where a command stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CommandStateName {
    /// Stored; the device gets it when it next connects.
    Pending,
    /// Written to a connection of the device.
    Delivered,
    /// The device acted on it (unlock: the server did).
    Acknowledged,
}

impl From<CommandState> for CommandStateName {
    fn from(state: CommandState) -> Self {
        match state {
            CommandState::Pending => CommandStateName::Pending,
            CommandState::Delivered => CommandStateName::Delivered,
            CommandState::Acknowledged => CommandStateName::Acknowledged,
        }
    }
}

/// A command to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SendCommand {
    kind: CommandKindName,
    /// Shown to the device's user (at most 1024 bytes).
    #[serde(default)]
    reason: String,
}

/// An operator command to a device.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct CommandInfo {
    /// Echoed by the device when it acknowledges.
    command_id: String,
    client_id: String,
    kind: CommandKindName,
    reason: String,
    state: CommandStateName,
    /// Unix milliseconds.
    created_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acknowledged_ms: Option<i64>,
}

impl From<StoredCommand> for CommandInfo {
    fn from(command: StoredCommand) -> Self {
        Self {
            command_id: command.command_id,
            client_id: command.client_id,
            kind: command.kind.into(),
            reason: command.reason,
            state: command.state.into(),
            created_ms: command.created_ms,
            delivered_ms: command.delivered_ms,
            acknowledged_ms: command.acknowledged_ms,
        }
    }
}

/// Lists devices, filtered.
#[utoipa::path(get, path = "/v1/admin/devices", tag = "devices", params(DeviceListQuery, PageQuery),
    responses(
        (status = 200, description = "A page of devices, by client id", body = Page<DeviceInfo>),
        (status = 400, description = "Bad filters or paging parameters", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    ))]
async fn list_devices(
    State(state): State<AdminState>,
    _caller: ViewerAccess,
    ApiQuery(filters): ApiQuery<DeviceListQuery>,
    ApiQuery(paging): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<Page<DeviceInfo>>> {
    let request = paging.request()?;
    let filter = DeviceFilter {
        user_id: filters.user,
        state: filters.state.map(DeviceState::from),
        platform: filters.platform,
        last_seen_before_ms: filters.last_seen_before,
        last_seen_after_ms: filters.last_seen_after,
    };
    let page = state.services.devices.list(filter, request.after, request.limit).await?;
    Ok(axum::Json(Page {
        items: page.devices.into_iter().map(DeviceInfo::from).collect(),
        next_cursor: page.next_after.as_deref().map(encode_cursor),
    }))
}

/// Returns a device with its live connections and, per partition it syncs, its cursor, the
/// head, its lag and its pending mutations.
#[utoipa::path(get, path = "/v1/admin/devices/{client_id}", tag = "devices",
    params(("client_id" = String, Path, description = "The device's client id")),
    responses(
        (status = 200, description = "The device", body = DeviceDetail),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
    ))]
async fn get_device(
    State(state): State<AdminState>,
    _caller: ViewerAccess,
    ApiPath(client_id): ApiPath<String>,
) -> ApiResult<axum::Json<DeviceDetail>> {
    let services = &state.services;
    let unflushed = services.cursors.unflushed_of(&client_id);
    Ok(axum::Json(device_detail(&services.devices, state.store().clone(), &client_id, unflushed).await?))
}

/// Returns a device with its live connections and, per partition it syncs, its cursor, the
/// head, its lag and its pending mutations; `unflushed` are cursors acked since the last
/// flush (the API's and the offline CLI's view of one device).
pub(crate) async fn device_detail(
    devices: &DeviceManagement,
    store: Arc<dyn Store>,
    client_id: &str,
    unflushed: Vec<(PartitionName, u64)>,
) -> ApiResult<DeviceDetail> {
    let device = devices.device(client_id).await?;
    let cursors = devices.cursors(client_id, unflushed).await?;
    let (client, names) = (client_id.to_owned(), cursors.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>());
    let (heads, mutations) = blocking(move || {
        let heads = names
            .iter()
            .map(|name| store.partition_state(name).map(|state| state.head))
            .collect::<Result<Vec<_>, _>>()?;
        let mutations = store.pending_mutations()?.into_iter().filter(|mutation| mutation.client_id == client);
        Ok((heads, mutations.collect::<Vec<_>>()))
    })
    .await?;
    let mut pending: BTreeMap<(String, String), u64> = BTreeMap::new();
    for mutation in &mutations {
        *pending.entry((mutation.partition.source.clone(), mutation.partition.key.clone())).or_default() += 1;
    }
    let partitions = cursors
        .into_iter()
        .zip(heads)
        .map(|((name, cursor), head)| {
            let lag = devices.lag_time(&name, cursor);
            let lag_changes = head.saturating_sub(cursor);
            DevicePartition {
                pending_mutations: pending.get(&(name.source.clone(), name.key.clone())).copied().unwrap_or(0),
                source: name.source,
                key: name.key,
                cursor,
                head,
                lag_changes,
                lag_ms: if lag_changes == 0 { Some(0) } else { lag.map(|lag| lag.millis) },
                lag_ms_at_least: lag_changes > 0 && lag.is_some_and(|lag| lag.at_least),
            }
        })
        .collect();
    Ok(DeviceDetail {
        live_connections: devices.live_connections(client_id) as u64,
        device: device.into(),
        partitions,
        pending_mutations: mutations.len() as u64,
    })
}

/// Sends a command to a device: stored first, delivered at once when the device is
/// connected, else at its next connection (unlock takes effect on the server at once).
#[utoipa::path(post, path = "/v1/admin/devices/{client_id}/commands", tag = "devices", request_body = SendCommand,
    params(("client_id" = String, Path, description = "The device's client id")),
    responses(
        (status = 202, description = "Stored (and delivered when the device is connected)", body = CommandInfo),
        (status = 400, description = "Malformed request or reason too long", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
    ))]
async fn send_command(
    State(state): State<AdminState>,
    AdminAccess(caller): AdminAccess,
    ApiPath(client_id): ApiPath<String>,
    ApiJson(request): ApiJson<SendCommand>,
) -> ApiResult<(StatusCode, axum::Json<CommandInfo>)> {
    let kind = DeviceCommandKind::from(request.kind);
    let command = state.services.devices.send(&client_id, kind, &request.reason).await?;
    tracing::info!(caller = %caller.name, client_id, command_id = %command.command_id, %kind, "device command sent by an operator");
    Ok((StatusCode::ACCEPTED, axum::Json(command.into())))
}

/// Lists a device's commands, oldest first, each with its state.
#[utoipa::path(get, path = "/v1/admin/devices/{client_id}/commands", tag = "devices",
    params(("client_id" = String, Path, description = "The device's client id"), PageQuery),
    responses(
        (status = 200, description = "A page of commands, oldest first", body = Page<CommandInfo>),
        (status = 400, description = "Bad paging parameters", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
    ))]
async fn list_commands(
    State(state): State<AdminState>,
    _caller: ViewerAccess,
    ApiPath(client_id): ApiPath<String>,
    ApiQuery(paging): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<Page<CommandInfo>>> {
    let request = paging.request()?;
    let commands = state.services.devices.commands(&client_id).await?;
    let infos: Vec<(u64, CommandInfo)> = commands.into_iter().map(|command| (command.seq, command.into())).collect();
    // Positions sort as text when zero-padded.
    let page = Page::from_sorted(infos, &request, |(seq, _)| format!("{seq:020}"));
    Ok(axum::Json(Page {
        items: page.items.into_iter().map(|(_, info)| info).collect(),
        next_cursor: page.next_cursor,
    }))
}
