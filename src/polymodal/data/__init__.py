"""Tables, schema inference, decoding and preprocessing: everything between a file and a tensor."""
