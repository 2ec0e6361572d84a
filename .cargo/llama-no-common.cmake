# Included by CMake right after llama.cpp's project() (CMAKE_PROJECT_INCLUDE,
# set in .cargo/config.toml). llama-cpp-2 asks for llama-cpp-sys-2 with its
# default features, which build llama.cpp's `common` library (52 C++ files and
# cpp-httplib); the worker calls nothing of it, and Faena cannot turn a
# dependency's feature off, so the library is not built.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "" FORCE)
