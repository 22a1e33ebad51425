# Copies a .proto without its service blocks: protoc-c's service stubs are
# for protobuf-c-rpc, unused here, and `rpc Init` would collide with the
# generated fsps__v1__parameter_server__init.
file(READ ${IN} text)
string(REGEX REPLACE "\nservice [A-Za-z]+ {[^}]*}" "\n" text "${text}")
file(WRITE ${OUT} "${text}")
