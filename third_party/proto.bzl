"""cc_grpc_proto: C++ code for one .proto (messages and, if it has services, gRPC stubs) via protoc."""

def cc_grpc_proto(name, src, deps = [], proto_deps = [], grpc = True, visibility = None):
    """Generates <base>.pb.{h,cc} (and <base>.grpc.pb.{h,cc}) for `src` and wraps them in a cc_library.

    Args:
      name: the cc_library's name.
      src: the .proto file in this package.
      deps: cc_grpc_proto targets whose messages `src` imports.
      proto_deps: the .proto files `src` imports (protoc needs them to resolve imports).
      grpc: whether `src` defines services.
      visibility: the cc_library's visibility (default: the package's).
    """
    base = src[:-len(".proto")]
    outs = [base + ".pb.h", base + ".pb.cc"]
    if grpc:
        outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
    grpc_flags = "--grpc_out=$(GENDIR) --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin" if grpc else ""
    native.genrule(
        name = name + "_gen",
        srcs = [src] + proto_deps,
        outs = outs,
        cmd = "protoc -I. --cpp_out=$(GENDIR) %s $(location %s)" % (grpc_flags, src),
    )
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = deps + ["//third_party:protobuf"] + (["//third_party:grpc"] if grpc else []),
        visibility = visibility,
    )
