//! Echoes the request body with status 200: what `brink`'s `echo` function
//! does, written for `wasmtime serve` (wasi:http/proxy).

use std::io::{Read as _, Write as _};

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

wasi::http::proxy::export!(Hello);

struct Hello;

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let mut data = Vec::new();
        if let Ok(body) = request.consume() {
            if let Ok(mut stream) = body.stream() {
                let _ = stream.read_to_end(&mut data);
            }
        }
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"application/json".to_vec()]);
        let response = OutgoingResponse::new(headers);
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(mut out) = body.write() {
            let _ = out.write_all(&data);
            let _ = out.flush();
        }
        let _ = OutgoingBody::finish(body, None);
    }
}
