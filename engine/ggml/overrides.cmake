# Included by llama.cpp's CMake build after each project() call (CMAKE_PROJECT_INCLUDE, set in
# .cargo/config.toml and passed on by llama-cpp-sys-2's build script). It swaps in genq's decode
# attention kernel and Q8_0 matrix kernel without carrying a copy of llama.cpp: ggml's own
# functions are renamed where they are defined (ops.cpp, llamafile/sgemm.cpp), and genq's files,
# added to the CPU backend, take their names and call them for every case they do not handle.
# llama-cpp-sys-2 configures a build directory only once: one configured before this hook (or
# before a source was added here) needs `cargo clean -p llama-cpp-sys-2`.

if(NOT PROJECT_NAME STREQUAL "llama.cpp")
    return()
endif()
if(CMAKE_VERSION VERSION_LESS 3.19)
    message(FATAL_ERROR "genq's kernels need CMake 3.19 or newer, not ${CMAKE_VERSION}")
endif()

# Compiles the one ggml-cpu source matching source_regex with `definition` (old=new), so that the
# function it defines is renamed there and genq's file can take the old name.
function(genq_rename_in_source source_regex definition why_missing)
    get_target_property(cpu_sources ggml-cpu SOURCES)
    list(FILTER cpu_sources INCLUDE REGEX "${source_regex}")
    list(LENGTH cpu_sources found)
    if(NOT found EQUAL 1)
        message(FATAL_ERROR "genq: expected one source matching ${source_regex} in ggml-cpu, "
            "found ${found}${why_missing}")
    endif()
    get_target_property(cpu_dir ggml-cpu SOURCE_DIR)
    get_filename_component(source "${cpu_sources}" ABSOLUTE BASE_DIR "${cpu_dir}")
    set_property(SOURCE "${source}" TARGET_DIRECTORY ggml-cpu APPEND PROPERTY
        COMPILE_DEFINITIONS ${definition})
endfunction()

function(genq_apply_ggml_overrides)
    # With GGML_BACKEND_DL the CPU backend is a module loaded at run time, where genq-engine
    # cannot reach genq_set_upstream_attention or genq_set_upstream_matmul.
    if(NOT TARGET ggml-cpu)
        message(FATAL_ERROR "genq's kernels need ggml's CPU backend linked in "
            "(a ggml-cpu target; GGML_BACKEND_DL builds have none)")
    endif()
    genq_rename_in_source("ggml-cpu/ops\\.cpp$"
        ggml_compute_forward_flash_attn_ext=ggml_compute_forward_flash_attn_ext_upstream "")
    genq_rename_in_source("ggml-cpu/llamafile/sgemm\\.cpp$"
        llamafile_sgemm=llamafile_sgemm_upstream
        " (GGML_LLAMAFILE=OFF builds have none, and genq's matrix kernel needs its entry point)")
    target_sources(ggml-cpu PRIVATE
        ${GENQ_GGML_DIR}/flash_attn_decode.cpp ${GENQ_GGML_DIR}/q8_0_matmul.cpp)
    message(STATUS "genq: decode attention and Q8_0 matrix kernels added to ggml-cpu")
endfunction()

# llama-cpp-2 always has llama-cpp-sys-2 build llama.cpp's `common` library (argument parsing,
# chat templates, model downloads over the vendored cpp-httplib) and link it, though genq calls
# none of it: every function genq runs is in llama and ggml. Their 54 sources took 221 s to
# compile on 2 cores at -O3 and take 143 s unoptimized (AMD EPYC, 2026-12-07). A later -O wins
# over CMAKE_CXX_FLAGS_RELEASE's -O3.
function(genq_compile_unused_libraries_unoptimized)
    foreach(target llama-common cpp-httplib)
        if(TARGET ${target})
            target_compile_options(${target} PRIVATE -O0)
        else()
            # Renamed upstream, or no longer built: the build still works, only slower.
            message(WARNING "genq: no ${target} target in llama.cpp to compile unoptimized")
        endif()
    endforeach()
endfunction()

set(GENQ_GGML_DIR ${CMAKE_CURRENT_LIST_DIR})
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL genq_apply_ggml_overrides)
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL genq_compile_unused_libraries_unoptimized)
