//! An in-process Qdrant speaking the REST endpoints the memory backend uses (no Qdrant server can be
//! installed here, STACK.md §12): `GET`/`PUT`/`DELETE /collections/{name}`, `PUT …/points` (upsert),
//! `POST …/points/delete` and `POST …/points/query` (nearest points, optional `must` payload match
//! filter). Cosine collections normalise vectors on upsert like Qdrant; a wrong vector size is 400; with
//! an API key configured, a request without the matching `api-key` header is 401.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use serde_json::{Value, json};

#[derive(Default)]
struct Collection {
    size: usize,
    config: Value,
    /// Point id → (unit vector, payload).
    points: BTreeMap<String, (Vec<f32>, Value)>,
}

#[derive(Default)]
struct Shared {
    api_key: Option<String>,
    collections: Mutex<HashMap<String, Collection>>,
    requests: Mutex<usize>,
}

/// A fake Qdrant; state lives as long as the value.
pub struct FakeQdrant {
    url: String,
    shared: Arc<Shared>,
}

fn ok(result: Value) -> Response {
    axum::Json(json!({"result": result, "status": "ok", "time": 0.0})).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"status": {"error": message}, "time": 0.0}))).into_response()
}

fn authorised(shared: &Shared, headers: &HeaderMap) -> bool {
    *shared.requests.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    match &shared.api_key {
        None => true,
        Some(key) => headers.get("api-key").and_then(|value| value.to_str().ok()) == Some(key.as_str()),
    }
}

fn point_id(value: &Value) -> Option<String> {
    match value {
        Value::String(id) => Some(id.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn matches(filter: &Value, payload: &Value) -> bool {
    filter["must"].as_array().is_none_or(|conditions| {
        conditions
            .iter()
            .all(|condition| condition["key"].as_str().is_some_and(|key| payload[key] == condition["match"]["value"]))
    })
}

macro_rules! guard {
    ($shared:expr, $headers:expr) => {
        if !authorised(&$shared, &$headers) {
            return error(StatusCode::UNAUTHORIZED, "Must provide an API key or an Authorization bearer token");
        }
    };
}

async fn get_collection(State(shared): State<Arc<Shared>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    guard!(shared, headers);
    let collections = shared.collections.lock().unwrap_or_else(PoisonError::into_inner);
    match collections.get(&name) {
        Some(collection) => ok(json!({"status": "green", "points_count": collection.points.len(),
                                       "config": {"params": {"vectors": {"size": collection.size}}, "quantization_config": collection.config}})),
        None => error(StatusCode::NOT_FOUND, &format!("Collection `{name}` doesn't exist!")),
    }
}

async fn create_collection(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    guard!(shared, headers);
    let Some(size) = body["vectors"]["size"].as_u64().filter(|size| *size > 0) else {
        return error(StatusCode::BAD_REQUEST, "vectors.size is required");
    };
    if body["vectors"]["distance"] != "Cosine" {
        return error(StatusCode::BAD_REQUEST, "the fake supports Cosine only");
    }
    let mut collections = shared.collections.lock().unwrap_or_else(PoisonError::into_inner);
    if collections.contains_key(&name) {
        return error(StatusCode::CONFLICT, &format!("Collection `{name}` already exists!"));
    }
    let config = body["quantization_config"].clone();
    collections.insert(name, Collection { size: size as usize, config, points: BTreeMap::new() });
    ok(json!(true))
}

async fn delete_collection(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    guard!(shared, headers);
    let removed = shared.collections.lock().unwrap_or_else(PoisonError::into_inner).remove(&name).is_some();
    ok(json!(removed))
}

async fn upsert(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    guard!(shared, headers);
    let mut collections = shared.collections.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(collection) = collections.get_mut(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("Collection `{name}` doesn't exist!"));
    };
    let Some(points) = body["points"].as_array() else { return error(StatusCode::BAD_REQUEST, "points required") };
    let mut parsed = Vec::new();
    for point in points {
        let (Some(id), Some(vector)) = (point_id(&point["id"]), point["vector"].as_array()) else {
            return error(StatusCode::BAD_REQUEST, "each point needs an id and a vector");
        };
        let mut vector: Vec<f32> = vector.iter().filter_map(Value::as_f64).map(|x| x as f32).collect();
        if vector.len() != collection.size {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "Wrong input: Vector dimension error: expected dim: {}, got {}",
                    collection.size,
                    vector.len()
                ),
            );
        }
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            vector.iter_mut().for_each(|x| *x /= norm);
        }
        parsed.push((id, vector, point["payload"].clone()));
    }
    for (id, vector, payload) in parsed {
        collection.points.insert(id, (vector, payload));
    }
    ok(json!({"operation_id": 0, "status": "completed"}))
}

async fn delete_points(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    guard!(shared, headers);
    let mut collections = shared.collections.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(collection) = collections.get_mut(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("Collection `{name}` doesn't exist!"));
    };
    for id in body["points"].as_array().into_iter().flatten().filter_map(point_id) {
        collection.points.remove(&id);
    }
    ok(json!({"operation_id": 0, "status": "completed"}))
}

async fn query(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    guard!(shared, headers);
    let collections = shared.collections.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(collection) = collections.get(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("Collection `{name}` doesn't exist!"));
    };
    let Some(query) = body["query"].as_array() else { return error(StatusCode::BAD_REQUEST, "query required") };
    let query: Vec<f32> = query.iter().filter_map(Value::as_f64).map(|x| x as f32).collect();
    if query.len() != collection.size {
        return error(StatusCode::BAD_REQUEST, "Wrong input: Vector dimension error");
    }
    let norm = query.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    let limit = body["limit"].as_u64().unwrap_or(10) as usize;
    let mut scored: Vec<(f32, &String)> = collection
        .points
        .iter()
        .filter(|(_, (_, payload))| matches(&body["filter"], payload))
        .map(|(id, (vector, _))| (vector.iter().zip(&query).map(|(a, b)| a * b).sum::<f32>() / norm, id))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    let points: Vec<Value> =
        scored.into_iter().take(limit).map(|(score, id)| json!({"id": id, "version": 0, "score": score})).collect();
    ok(json!({"points": points}))
}

impl FakeQdrant {
    /// Binds `127.0.0.1:0` and starts serving; with `api_key`, every request must carry it.
    ///
    /// # Panics
    /// When no local port can be bound (test set-up failure).
    pub async fn start(api_key: Option<&str>) -> FakeQdrant {
        let shared = Arc::new(Shared { api_key: api_key.map(str::to_owned), ..Shared::default() });
        let app = Router::new()
            .route("/collections/{name}", put(create_collection).get(get_collection).delete(delete_collection))
            .route("/collections/{name}/points", put(upsert))
            .route("/collections/{name}/points/delete", post(delete_points))
            .route("/collections/{name}/points/query", post(query))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake Qdrant");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeQdrant { url, shared }
    }

    /// The REST base URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Names of the collections that exist.
    pub fn collections(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.shared.collections.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        names.sort();
        names
    }

    /// Point ids of a collection (empty when it does not exist).
    pub fn point_ids(&self, collection: &str) -> Vec<String> {
        let collections = self.shared.collections.lock().unwrap_or_else(PoisonError::into_inner);
        collections.get(collection).map(|c| c.points.keys().cloned().collect()).unwrap_or_default()
    }

    /// The `quantization_config` a collection was created with.
    pub fn quantization(&self, collection: &str) -> Value {
        let collections = self.shared.collections.lock().unwrap_or_else(PoisonError::into_inner);
        collections.get(collection).map(|c| c.config.clone()).unwrap_or(Value::Null)
    }

    /// Requests received so far (refused ones included).
    pub fn requests(&self) -> usize {
        *self.shared.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
