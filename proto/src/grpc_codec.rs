//! The gRPC codec of the generated servers (Ingest, and the SDKs' Channel and MobileService).
//!
//! tonic's prost codec turns a request that does not decode (malformed bytes, a string field
//! that is not UTF-8) into INTERNAL, which tells the caller the server failed. The request is
//! what is wrong, so [`ServerCodec`] answers INVALID_ARGUMENT, naming what did not decode.
//! Responses are encoded as tonic's codec does. Clients keep tonic's codec: for them an
//! undecodable response is the server's fault.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// Encodes responses with prost and decodes requests with [`RequestDecoder`].
#[derive(Debug, Clone)]
pub struct ServerCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for ServerCodec<T, U> {
    fn default() -> Self {
        Self { _messages: PhantomData }
    }
}

impl<T, U> Codec for ServerCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder { _message: PhantomData }
    }
}

/// Decodes a request message; one that does not decode is INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct RequestDecoder<U> {
    _message: PhantomData<U>,
}

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(request_decode_status)
    }
}

/// Returns the status of a request that did not decode.
fn request_decode_status(error: prost::DecodeError) -> Status {
    // prost's message names the field that failed, e.g. "PushRequest.source: invalid string
    // value: data is not UTF-8 encoded".
    Status::invalid_argument(format!("the request is not a valid protobuf message: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::PushRequest;

    #[test]
    fn undecodable_requests_are_invalid_arguments() {
        // Field 1 (source), length 2, bytes that are not UTF-8.
        let error = PushRequest::decode(&[0x0a, 0x02, 0xff, 0xfe][..]).unwrap_err();
        let status = request_decode_status(error);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("PushRequest.source"), "{}", status.message());
    }
}
