//! Content-addressed blobstore.
