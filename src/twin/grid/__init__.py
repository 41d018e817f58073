"""The grid side: twin's OpenADR VEN. ``openadr`` turns an OpenADR 3 event (3.0.1 or 3.1
shape) into ``grid.signals`` records, one per targeted site and payload, checking the GAC
profile's rules; ``safe_mode`` says what to write when the VTN cannot be reached; ``client``
talks to an OpenADR 3 VTN, ``ven`` is the process, ``ven2b`` the OpenADR 2.0b variant
(through openleadr). Everything that decides is pure; the process only wires HTTP, Kafka
and the clock to it."""
