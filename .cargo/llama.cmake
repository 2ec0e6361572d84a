# Included by CMake right after each project() of llama.cpp's build
# (CMAKE_PROJECT_INCLUDE, set in .cargo/config.toml).

# llama-cpp-2 asks for llama-cpp-sys-2 with its default features, which build
# llama.cpp's `common` library (52 C++ files and cpp-httplib); the worker calls
# nothing of it, and Faena cannot turn a dependency's feature off, so the
# library is not built.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "" FORCE)

# Two changes to llama's own target (not ggml's), made once src/ has made
# it: ggml's own project() includes this file too, so only llama.cpp's defers
# the call, to the end of its directory.
#
# Its opt-level. ggml, where an answer's time goes (its CPU kernels), is
# always CMake's Release (-O3). llama's own code (loading the model, building
# each step's graph, sampling) takes the opt-level the Cargo profile gives
# llama-cpp-sys-2 (its build script's OPT_LEVEL) where that is below 3:
# dev.sh's `dev-cluster` profile builds it at -O1, in 200 CPU-seconds instead
# of 272 (BENCHMARKS.md, "A newcomer's cold start"); the others, tests'
# included, at 3 (Cargo.toml). The flag comes after Release's -O3 on the
# command line, so it wins.
#
# One precompiled header. llama's own code is 42 translation units (its core
# files and the model architectures in unity batches of 16), and each used to
# parse the same headers again: a second or so of every file's compile, at
# any opt-level. One precompiled header of what they share (the
# architectures' declarations, which pull in the model, graph and loader
# headers, and the standard headers most of them include) is parsed once; the
# files then compile about a fifth faster: about 25 CPU-seconds fewer a
# build, the header's own 2 counted (BENCHMARKS.md, "llama.cpp's headers
# parsed once"). The code compiled is the same: every one of these headers is
# guarded, and no file defines a macro before its first include.
function(faena_llama)
  if(NOT TARGET llama)
    return()
  endif()
  if("$ENV{OPT_LEVEL}" MATCHES "^[012]$")
    target_compile_options(llama PRIVATE "-O$ENV{OPT_LEVEL}")
  endif()
  target_precompile_headers(llama PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/src/models/models.h"
    <algorithm> <cassert> <cstring> <functional> <memory> <sstream> <stdexcept> <string> <unordered_map> <vector>)
endfunction()
if(PROJECT_NAME STREQUAL "llama.cpp")
  cmake_language(DEFER CALL faena_llama)
endif()
