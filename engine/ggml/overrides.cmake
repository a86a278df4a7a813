# Included by llama.cpp's CMake build after each project() call (CMAKE_PROJECT_INCLUDE, set in
# .cargo/config.toml and passed on by llama-cpp-sys-2's build script). It swaps in genq's decode
# attention kernel without carrying a copy of llama.cpp: ggml's own function is renamed in ops.cpp
# and flash_attn_decode.cpp, added to the CPU backend, takes its name and calls it for every case
# it does not handle. llama-cpp-sys-2 configures a build directory only once: one configured
# before this hook existed needs `cargo clean -p llama-cpp-sys-2`.

if(NOT PROJECT_NAME STREQUAL "llama.cpp")
    return()
endif()
if(CMAKE_VERSION VERSION_LESS 3.19)
    message(FATAL_ERROR "genq's attention kernel needs CMake 3.19 or newer, not ${CMAKE_VERSION}")
endif()

function(genq_apply_ggml_overrides)
    # With GGML_BACKEND_DL the CPU backend is a module loaded at run time, where genq-engine
    # cannot reach genq_set_upstream_attention.
    if(NOT TARGET ggml-cpu)
        message(FATAL_ERROR "genq's attention kernel needs ggml's CPU backend linked in "
            "(a ggml-cpu target; GGML_BACKEND_DL builds have none)")
    endif()
    get_target_property(cpu_sources ggml-cpu SOURCES)
    list(FILTER cpu_sources INCLUDE REGEX "ggml-cpu/ops\\.cpp$")
    list(LENGTH cpu_sources found)
    if(NOT found EQUAL 1)
        message(FATAL_ERROR "genq: expected one ggml-cpu/ops.cpp in ggml-cpu, found ${found}")
    endif()
    get_target_property(cpu_dir ggml-cpu SOURCE_DIR)
    get_filename_component(ops_cpp ${cpu_sources} ABSOLUTE BASE_DIR ${cpu_dir})
    set_property(SOURCE ${ops_cpp} TARGET_DIRECTORY ggml-cpu APPEND PROPERTY
        COMPILE_DEFINITIONS
        ggml_compute_forward_flash_attn_ext=ggml_compute_forward_flash_attn_ext_upstream)
    target_sources(ggml-cpu PRIVATE ${GENQ_GGML_DIR}/flash_attn_decode.cpp)
    message(STATUS "genq: decode attention kernel added to ggml-cpu")
endfunction()

set(GENQ_GGML_DIR ${CMAKE_CURRENT_LIST_DIR})
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL genq_apply_ggml_overrides)
